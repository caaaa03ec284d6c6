import { assert, assertEquals, assertThrows } from "../../core/testing/assert.ts";
import { NovaError } from "../../core/errors/mod.ts";
import { SystemdNotifier } from "./mod.ts";

/** A receiving datagram socket, as systemd's manager has, bound at `path`. */
function receiver(path: string): { next(): Promise<string>; close(): void } {
  const conn = Deno.listenDatagram({ transport: "unixpacket", path });
  return {
    next: async () => new TextDecoder().decode((await conn.receive())[0]),
    close: () => conn.close(),
  };
}

function withNotifySocket<T>(value: string, fn: () => T): T {
  Deno.env.set("NOTIFY_SOCKET", value);
  try {
    return fn();
  } finally {
    Deno.env.delete("NOTIFY_SOCKET");
  }
}

Deno.test("sd_notify: datagrams reach the socket NOTIFY_SOCKET names, in order", async () => {
  const dir = await Deno.makeTempDir();
  const manager = receiver(`${dir}/notify`);
  try {
    const n = withNotifySocket(`${dir}/notify`, () => {
      const n = SystemdNotifier.fromEnv();
      assertEquals(Deno.env.get("NOTIFY_SOCKET"), undefined); // children must not inherit it
      return n;
    })!;
    await Promise.all([
      n.notify({ STATUS: "waiting for a leader" }),
      n.notify({ READY: "1", STATUS: "ready\n(leader n1)" }),
    ]);
    assertEquals(await manager.next(), "STATUS=waiting for a leader");
    assertEquals(await manager.next(), "READY=1\nSTATUS=ready (leader n1)");
    n.close();
  } finally {
    manager.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sd_notify: an @name socket is in the abstract namespace", async () => {
  const name = `novactl-test-${crypto.randomUUID()}`;
  const manager = receiver(`\0${name}`);
  try {
    const n = withNotifySocket(`@${name}`, () => SystemdNotifier.fromEnv())!;
    await n.notify({ STOPPING: "1" });
    assertEquals(await manager.next(), "STOPPING=1");
    n.close();
  } finally {
    manager.close();
  }
});

Deno.test("sd_notify: none without NOTIFY_SOCKET; a bad one is refused", () => {
  Deno.env.delete("NOTIFY_SOCKET");
  assertEquals(SystemdNotifier.fromEnv(), null);
  const err = assertThrows(() => withNotifySocket("notify", () => SystemdNotifier.fromEnv()));
  assert(err instanceof NovaError && err.message.includes("NOTIFY_SOCKET"), String(err));
});
