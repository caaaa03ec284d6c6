/**
 * Access log lines and request ids, over the real app and a one-voter leader in-process:
 * each API request logs one line naming its request id, which is the id the client got
 * back and the id of the operation it started.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { setLogLevel, setLogSink } from "../core/log/mod.ts";
import { startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "access log: one line per API request with its request id, also on the operation it starts",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const lines: Record<string, unknown>[] = [];
  setLogSink((line) => lines.push(JSON.parse(line)));
  setLogLevel("info");
  const { c, call, tokens } = await startTestApp();
  try {
    const requests = () => lines.filter((l) => l.msg === "request");
    const drained = await call("POST", `/api/v1/nodes/${c.node.id}/drain`, {
      token: tokens.admin,
    });
    assertEquals(drained.status, 202, JSON.stringify(drained.body));
    const rid = drained.headers.get("x-request-id")!;
    assert(rid, "the answer names its request id");
    assertEquals((drained.body as { requestId?: string }).requestId, rid, "the operation's");
    const line = requests().find((l) => l.requestId === rid);
    assert(line, `an access line for ${rid}: ${JSON.stringify(requests())}`);
    assertEquals(
      [line.method, line.path, line.status, line.principal],
      ["POST", `/api/v1/nodes/${c.node.id}/drain`, 202, "admin"],
    );
    assert(typeof line.ms === "number" && typeof line.remote === "string");

    const before = requests().length;
    await call("GET", "/api/v1/vms?token=do-not-log-me", { token: tokens.viewer });
    await call("GET", "/healthz");
    const added = requests().slice(before);
    assertEquals(added.map((l) => l.path), ["/api/v1/vms"], "probes log at debug only");
    assert(!JSON.stringify(added).includes("do-not-log-me"), "no query string in the log");
  } finally {
    setLogSink(null);
    await c.stop();
  }
});
