import { DEFAULT_CONFIG, validateConfigPatch, validateFullConfig } from "./schema.ts";
import { assertEquals, assertThrows } from "../testing/assert.ts";
import { ValidationError } from "../errors/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

testWithTimeout({ name: "numeric strings from the CLI are coerced", timeoutMs: 2 * MINUTE }, () => {
  assertEquals(validateConfigPatch({ "nodes.offlineAfterMs": "5000" }), {
    "nodes.offlineAfterMs": 5000,
  });
  assertEquals(validateConfigPatch({ "rebalancer.enabled": "true" }), {
    "rebalancer.enabled": true,
  });
});

testWithTimeout({
  name: "unknown keys and bad values are rejected with the field named",
  timeoutMs: 2 * MINUTE,
}, () => {
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

testWithTimeout(
  { name: "a full document takes defaults for missing keys", timeoutMs: 2 * MINUTE },
  () => {
    assertEquals(validateFullConfig({ "cluster.name": "prod" }), {
      ...DEFAULT_CONFIG,
      "cluster.name": "prod",
    });
  },
);
