import { assert, assertEquals } from "../../core/testing/assert.ts";
import { runClosedLoop } from "./loadgen.ts";

Deno.test("loadgen: maxRequests caps what is sent, warmup included, and shortens the window", async () => {
  let received = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    received++;
    return new Response("ok");
  });
  try {
    const result = await runClosedLoop({
      clients: 4,
      durationMs: 30_000,
      warmupMs: 0,
      maxRequests: 50,
      requestFor: () => ({
        url: `http://127.0.0.1:${server.addr.port}/`,
        method: "POST",
        headers: {},
        body: "x",
      }),
    });
    assertEquals(received, 50);
    assertEquals(result.writes, 50);
    assert(result.durationMs < 30_000, `the window ended with the budget: ${result.durationMs}`);
    assertEquals(result.writesPerSec, 50 / (result.durationMs / 1000));
  } finally {
    await server.shutdown();
  }
});
