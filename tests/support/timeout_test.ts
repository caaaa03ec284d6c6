import { assert, assertEquals } from "../../core/testing/assert.ts";
import { readWithTimeout, runWithTimeout, TestTimeoutError } from "./timeout.ts";

Deno.test("runWithTimeout fails a body that never settles, and aborts its signal", async () => {
  let seen: AbortSignal | undefined;
  const error = await runWithTimeout("a hung body", 50, (signal) => {
    seen = signal;
    return new Promise<void>(() => {});
  }).then(() => null, (e) => e);
  assert(error instanceof TestTimeoutError, `a TestTimeoutError, not ${error}`);
  assert(/a hung body did not finish within 50 ms/.test(error.message), error.message);
  assert(seen?.aborted, "the body's signal aborted");
});

Deno.test("runWithTimeout returns what a body in time returns", async () => {
  assertEquals(await runWithTimeout("a quick body", 5_000, () => Promise.resolve(7)), 7);
});

Deno.test("readWithTimeout fails a read with nothing to read", async () => {
  const stream = new ReadableStream<Uint8Array>({ start() {} });
  const reader = stream.getReader();
  const error = await readWithTimeout(reader, 50, "a silent stream").then(() => null, (e) => e);
  assert(error instanceof TestTimeoutError, `a TestTimeoutError, not ${error}`);
  await reader.cancel();
});

Deno.test("on timeout, onTimeout runs (to stop what the body started) before the failure", async () => {
  const order: string[] = [];
  const error = await runWithTimeout("a hung body", 20, () => new Promise<void>(() => {}), {
    onTimeout: async () => {
      await new Promise((r) => setTimeout(r, 20));
      order.push("cleaned up");
    },
  }).then(() => null, (e) => (order.push("failed"), e));
  assert(error instanceof TestTimeoutError, String(error));
  assertEquals(order, ["cleaned up", "failed"]);
});
