/**
 * The console WebSockets' checks before any upgrade, in-process (the consoles themselves, with
 * QEMU and a relaying node, are in tests/console_test.ts): a token from the header or the
 * query, 401 without a valid one, 403 for a viewer (serial or VNC), 404 for an unknown VM; and a token
 * given in the query never reaches the access log.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { setLogLevel, setLogSink } from "../core/log/mod.ts";
import { startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "console WebSockets: 401 / 403 / 404 before the upgrade; the query token is not logged",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const lines: string[] = [];
  setLogSink((line) => lines.push(line));
  setLogLevel("info");
  const { c, call, tokens } = await startTestApp();
  try {
    const serial = "/api/v1/vms/ghost/console/ws";
    const vnc = "/api/v1/vms/ghost/vnc/ws";
    const status = async (path: string, token?: string) =>
      (await call("GET", path, { token }))
        .status;
    assertEquals(await status(serial), 401, "no token");
    assertEquals(await status(`${serial}?token=nva_bogus`), 401, "a bad query token");
    assertEquals(await status(serial, "nva_bogus"), 401, "a bad header token");
    assertEquals(await status(`${vnc}?token=${tokens.viewer}`), 403, "a viewer on VNC");
    assertEquals(await status(vnc, tokens.viewer), 403, "a viewer on VNC (header)");
    assertEquals(await status(`${serial}?token=${tokens.viewer}`), 403, "a viewer on serial");
    assertEquals(await status(serial, tokens.viewer), 403, "a viewer on serial (header)");
    assertEquals(await status(`${serial}?token=${tokens.operator}`), 404);
    assertEquals(await status(`${vnc}?token=${tokens.operator}`), 404);
    const r = await call("GET", `${serial}?token=${tokens.operator}`);
    assertEquals(r.body.error.code, "not_found");
    assert(lines.some((l) => l.includes(serial)), "the requests are logged");
    for (const t of [tokens.viewer, tokens.operator, "nva_bogus"]) {
      assert(!lines.some((l) => l.includes(t)), "a token in the access log");
    }
  } finally {
    setLogSink(null);
    await c.stop();
  }
});
