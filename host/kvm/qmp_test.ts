import { join } from "node:path";
import { TimeoutError, UnavailableError } from "../../core/errors/mod.ts";
import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import {
  encodeLine,
  parseJsonLine,
  QmpClient,
  QmpClosedError,
  QmpError,
  ReconnectingQmp,
  sleep,
} from "./qmp.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

// Generous bounds: TCG on a loaded CI machine is slow, and no test asserts timing.
const SLOW_MS = 20_000;

interface Qemu {
  child: Deno.ChildProcess;
  stop(): Promise<void>;
}

function spawnQemu(sock: string): Qemu {
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      "-accel",
      "tcg",
      "-nodefaults",
      "-display",
      "none",
      "-S",
      "-m",
      "64",
      "-qmp",
      `unix:${sock},server=on,wait=off`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return {
    child,
    async stop() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.output();
    },
  };
}

/** Runs `fn` with a fresh temp dir and a QEMU serving QMP on `<dir>/qmp.sock`. */
async function withQemu(fn: (sock: string, qemu: Qemu) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "qmp-test-" });
  const sock = join(dir, "qmp.sock");
  const qemu = spawnQemu(sock);
  try {
    await fn(sock, qemu);
  } finally {
    await qemu.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

function connect(sock: string): Promise<QmpClient> {
  return QmpClient.connect(sock, { timeoutMs: SLOW_MS, retryUntil: Date.now() + SLOW_MS });
}

async function closeClient(c: QmpClient): Promise<void> {
  c.close();
  await c.closed;
}

type Reply = (msg: unknown) => Promise<void>;
type Handler = (cmd: Record<string, unknown>, reply: Reply, conn: Deno.Conn) => void;

/**
 * A stand-in for QEMU's monitor: greets, accepts qmp_capabilities and passes
 * every other command to `handle`.
 */
function fakeQmpServer(path: string, handle: Handler) {
  const listener = Deno.listen({ transport: "unix", path });
  const conns = new Set<Deno.Conn>();
  const loops: Promise<void>[] = [];
  const serveConn = async (conn: Deno.Conn) => {
    const reply: Reply = async (msg) => {
      await conn.write(encodeLine(msg)).catch(() => {});
    };
    await reply({ QMP: { version: { qemu: { major: 0, minor: 0, micro: 0 } }, capabilities: [] } });
    let pending = "";
    const dec = new TextDecoder();
    const buf = new Uint8Array(4096);
    try {
      for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
        pending += dec.decode(buf.subarray(0, n));
        for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
          const cmd = parseJsonLine(new TextEncoder().encode(pending.slice(0, nl)))!;
          pending = pending.slice(nl + 1);
          if (cmd.execute === "qmp_capabilities") await reply({ return: {}, id: cmd.id });
          else handle(cmd, reply, conn);
        }
      }
    } catch {
      // Closed by the test.
    }
  };
  const acceptLoop = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        loops.push(serveConn(conn));
      }
    } catch {
      // Listener closed.
    }
  })();
  return {
    connections: () => conns.size,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Already closed by the handler.
        }
      }
      await acceptLoop;
      await Promise.all(loops);
    },
  };
}

testWithTimeout({
  name: "qmp: greeting, prelaunch status, cont/stop with RESUME/STOP events",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withQemu(async (sock) => {
    const c = await connect(sock);
    try {
      assert(c.greeting.QMP.version.qemu.major >= 1, "greeting carries the QEMU version");
      assert(Array.isArray(c.greeting.QMP.capabilities));

      const st = await c.execute<{ status: string; running: boolean }>("query-status");
      assertEquals(st.running, false);
      assert(["prelaunch", "paused"].includes(st.status), `status ${st.status}`);

      const resumed = c.waitForEvent("RESUME", { timeoutMs: SLOW_MS });
      await c.execute("cont");
      const ev = await resumed;
      assertEquals(ev.event, "RESUME");
      assert(typeof ev.timestamp.seconds === "number");
      const st2 = await c.execute<{ status: string; running: boolean }>("query-status");
      assertEquals([st2.status, st2.running], ["running", true]);

      const seen: string[] = [];
      const off = c.on((e) => seen.push(e.event));
      const stopped = c.waitForEvent("STOP", { timeoutMs: SLOW_MS });
      await c.execute("stop");
      await stopped;
      off();
      assert(seen.includes("STOP"), "listeners see events too");
      const after = await c.execute<{ status: string; running: boolean }>("query-status");
      assertEquals([after.status, after.running], ["paused", false]);
    } finally {
      await closeClient(c);
    }
  });
});

testWithTimeout({
  name: "qmp: an unknown command rejects with QmpError class CommandNotFound",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withQemu(async (sock) => {
    const c = await connect(sock);
    try {
      const err = await assertRejects(() => c.execute("no-such-command"), QmpError);
      assertEquals((err as QmpError).errorClass, "CommandNotFound");
      assertEquals((err as QmpError).command, "no-such-command");
      // The session stays usable after an error reply.
      assertEquals((await c.execute<{ running: boolean }>("query-status")).running, false);
    } finally {
      await closeClient(c);
    }
  });
});

testWithTimeout({
  name: "qmp: 50 concurrent commands each get their own reply",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withQemu(async (sock) => {
    const c = await connect(sock);
    try {
      const calls = Array.from({ length: 50 }, (_, i) => {
        switch (i % 3) {
          case 0:
            return c.execute<Record<string, unknown>>("query-status").then((r) => "running" in r);
          case 1:
            return c.execute<Record<string, unknown>>("query-version").then((r) => "qemu" in r);
          default:
            return c.execute<Record<string, unknown>>("query-kvm").then((r) => "enabled" in r);
        }
      });
      const ok = await Promise.all(calls);
      assertEquals(ok, Array(50).fill(true));
    } finally {
      await closeClient(c);
    }
  });
});

testWithTimeout({
  name: "qmp: a hung command times out and its late reply goes to nobody",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmp-test-" });
  const path = join(dir, "fake.sock");
  let hung: unknown = null;
  const server = fakeQmpServer(path, (cmd, reply) => {
    if (cmd.execute === "hang") {
      hung = cmd.id;
      return;
    }
    // Answer the hung command only now, right before this one: a client that
    // matched replies by order instead of id would hand "late" to this call.
    if (hung !== null) reply({ return: "late", id: hung });
    reply({ return: "right", id: cmd.id });
  });
  try {
    const c = await QmpClient.connect(path, { timeoutMs: SLOW_MS });
    try {
      await assertRejects(() => c.execute("hang", undefined, { timeoutMs: 200 }), TimeoutError);
      assertEquals(await c.execute("after"), "right");
      assert(!c.isClosed());
    } finally {
      await closeClient(c);
    }
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "qmp: quit resolves closed and later commands reject clearly",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withQemu(async (sock, qemu) => {
    const c = await connect(sock);
    try {
      await c.execute("quit").catch((err) => {
        // QEMU may exit before its reply is read; that is a clean quit too.
        if (!(err instanceof QmpClosedError)) throw err;
      });
      await c.closed;
      assert(c.isClosed());
      await qemu.child.status;
      const err = await assertRejects(() => c.execute("query-status"), QmpClosedError);
      assert(/closed/.test(err.message), err.message);
      assertEquals((err as QmpClosedError).sent, false);
      await assertRejects(() => c.waitForEvent("RESUME", { timeoutMs: SLOW_MS }), QmpClosedError);
    } finally {
      await closeClient(c);
    }
  });
});

testWithTimeout({
  name: "qmp: pending commands reject when the socket closes under them",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmp-test-" });
  const path = join(dir, "fake.sock");
  const server = fakeQmpServer(path, (_cmd, _reply, conn) => conn.close());
  try {
    const c = await QmpClient.connect(path, { timeoutMs: SLOW_MS });
    try {
      const err = await assertRejects(
        () => c.execute("anything", undefined, { timeoutMs: SLOW_MS }),
        QmpClosedError,
      );
      assertEquals((err as QmpClosedError).sent, true);
      await c.closed;
    } finally {
      await closeClient(c);
    }
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "qmp: connect with retryUntil waits for a socket QEMU creates later",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmp-test-" });
  const sock = join(dir, "qmp.sock");
  let qemu: Qemu | null = null;
  try {
    const connecting = QmpClient.connect(sock, {
      timeoutMs: SLOW_MS,
      retryUntil: Date.now() + SLOW_MS,
    });
    await sleep(300);
    qemu = spawnQemu(sock);
    const c = await connecting;
    try {
      assertEquals((await c.execute<{ running: boolean }>("query-status")).running, false);
    } finally {
      await closeClient(c);
    }
  } finally {
    await qemu?.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "qmp: connect to a missing socket without retry fails at once",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmp-test-" });
  try {
    const path = join(dir, "absent.sock");
    const err = await assertRejects(() => QmpClient.connect(path), UnavailableError);
    assert(err.message.includes(path) && /does not exist/.test(err.message), err.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "qmp: a second client times out while the first holds the monitor",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withQemu(async (sock) => {
    const first = await connect(sock);
    const err = await assertRejects(
      () => QmpClient.connect(sock, { timeoutMs: 500 }),
      TimeoutError,
    );
    assert(/another client/.test(err.message), err.message);
    await closeClient(first);
    const next = await connect(sock);
    try {
      assertEquals((await next.execute<{ running: boolean }>("query-status")).running, false);
    } finally {
      await closeClient(next);
    }
  });
});

testWithTimeout({
  name: "qmp: ReconnectingQmp connects lazily and reconnects to a running QEMU",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withQemu(async (sock) => {
    const qmp = new ReconnectingQmp(sock, { connectTimeoutMs: SLOW_MS, retryMs: SLOW_MS });
    try {
      assert(!qmp.isConnected());
      assertEquals((await qmp.execute<{ running: boolean }>("query-status")).running, false);
      const first = await qmp.client();

      // Drop the session as a transient failure would; the next call reconnects.
      await closeClient(first);
      assertEquals((await qmp.execute<{ running: boolean }>("query-status")).running, false);
      const second = await qmp.client();
      assert(second !== first, "a new session was opened");

      // Listeners registered on the wrapper keep working on the new session.
      const resumed = qmp.waitForEvent("RESUME", { timeoutMs: SLOW_MS });
      await qmp.execute("cont");
      assertEquals((await resumed).event, "RESUME");
    } finally {
      await qmp.close();
    }
    await assertRejects(() => qmp.execute("query-status"), UnavailableError);
  });
});

testWithTimeout({
  name: "qmp: ReconnectingQmp reconnects after the server drops the connection",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "qmp-test-" });
  const path = join(dir, "fake.sock");
  const server = fakeQmpServer(path, (cmd, reply, conn) => {
    reply({ return: cmd.execute, id: cmd.id }).then(() => conn.close());
  });
  const qmp = new ReconnectingQmp(path, { connectTimeoutMs: SLOW_MS });
  try {
    const first = await qmp.client();
    assertEquals(await qmp.execute("one"), "one");
    await first.closed;
    assertEquals(await qmp.execute("two"), "two");
    assertEquals(server.connections(), 2);
  } finally {
    await qmp.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
