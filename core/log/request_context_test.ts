import { assertEquals } from "../testing/assert.ts";
import { currentRequestId, runForRequest } from "./request_context.ts";

Deno.test("the request id follows the work across awaits and stays inside it", async () => {
  assertEquals(currentRequestId(), undefined);
  const seen = await runForRequest("r1", async () => {
    await new Promise((r) => setTimeout(r, 5));
    const inner = await Promise.resolve().then(() => currentRequestId());
    return [currentRequestId(), inner];
  });
  assertEquals(seen, ["r1", "r1"]);
  const both = await Promise.all([
    runForRequest("a", async () => (await null, currentRequestId())),
    runForRequest("b", async () => (await null, currentRequestId())),
  ]);
  assertEquals(both, ["a", "b"]);
  assertEquals(currentRequestId(), undefined);
});
