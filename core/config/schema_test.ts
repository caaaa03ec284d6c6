import { DEFAULT_CONFIG, validateConfigPatch, validateFullConfig } from "./schema.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { ValidationError } from "../errors/mod.ts";

Deno.test("numeric strings from the CLI are coerced", () => {
  assertEquals(validateConfigPatch({ "nodes.offlineAfterMs": "5000" }), {
    "nodes.offlineAfterMs": 5000,
  });
  assertEquals(validateConfigPatch({ "rebalancer.enabled": "true" }), {
    "rebalancer.enabled": true,
  });
});

Deno.test("unknown keys and bad values are rejected with the field named", () => {
  const err = assertThrows(
    () =>
      validateConfigPatch({ "no.such": 1, "cluster.maxVoters": 4, "scheduler.strategy": "random" }),
    ValidationError,
  ) as ValidationError;
  assertEquals(err.issues.map((i) => i.field).sort(), [
    "cluster.maxVoters",
    "no.such",
    "scheduler.strategy",
  ]);
});

Deno.test("a full document takes defaults for missing keys", () => {
  assertEquals(validateFullConfig({ "cluster.name": "prod" }), {
    ...DEFAULT_CONFIG,
    "cluster.name": "prod",
  });
});
