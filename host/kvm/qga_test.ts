import { join } from "node:path";
import { TimeoutError } from "../../core/errors/mod.ts";
import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { GuestAgent } from "./qga.ts";
import { GUEST_LIMITS, guestInfoSchema } from "../../core/fsm/command_schemas.ts";
import { QmpError, sleep } from "./qmp.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

// Generous bounds; no test asserts timing.
const SLOW_MS = 20_000;
const enc = new TextEncoder();

const OS_INFO = {
  "id": "alpine",
  "name": "Alpine Linux",
  "pretty-name": "Alpine Linux v3.20",
  "version": "3.20.3",
  "version-id": "3.20.3",
  "kernel-release": "6.6.58-0-virt",
  "kernel-version": "#1-Alpine SMP",
  "machine": "x86_64",
};

const INTERFACES = [
  {
    "name": "lo",
    "hardware-address": "00:00:00:00:00:00",
    "ip-addresses": [
      { "ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8 },
      { "ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128 },
    ],
  },
  {
    "name": "eth0",
    "hardware-address": "52:54:00:12:34:56",
    "ip-addresses": [{ "ip-address-type": "ipv4", "ip-address": "10.0.0.5", "prefix": 24 }],
  },
  { "name": "sit0" },
];

interface FakeAgentOptions {
  /** Commands whose reply (without an id) is held back until the next request arrives. */
  late?: Set<string>;
  /** Close the connection after answering this many commands. */
  closeAfter?: number;
  /** Replies that replace the defaults, by command (a hostile guest's answers). */
  answers?: Record<string, unknown>;
}

/**
 * A stand-in for qemu-ga behind QEMU's chardev: a 0xFF byte resets its parser,
 * the sync reply follows a 0xFF sentinel and is preceded by stale junk, and
 * replies are written in fragments to exercise reassembly.
 */
function fakeAgent(path: string, opts: FakeAgentOptions = {}) {
  const listener = Deno.listen({ transport: "unix", path });
  const conns = new Set<Deno.Conn>();
  const loops: Promise<void>[] = [];
  const received: string[] = [];

  const serveConn = async (conn: Deno.Conn) => {
    const send = async (bytes: Uint8Array) => {
      // One write may take only part of a large reply.
      for (let off = 0; off < bytes.length;) {
        const n = await conn.write(bytes.subarray(off)).catch(() => 0);
        if (n <= 0) return;
        off += n;
      }
    };
    const sendJson = (msg: unknown) => send(enc.encode(JSON.stringify(msg) + "\n"));
    let held: unknown = null;
    let answered = 0;

    const handle = async (cmd: Record<string, unknown>) => {
      const name = String(cmd.execute);
      received.push(name);
      if (held !== null) {
        await sendJson(held);
        held = null;
      }
      const reply = (ret: unknown) => sendJson({ return: ret, id: cmd.id });
      switch (name) {
        case "guest-sync-delimited": {
          const id = (cmd.arguments as { id: number }).id;
          await send(enc.encode(`{"return": 4242}\nnot json at all\n\xff`));
          await send(new Uint8Array([0xff, ...enc.encode(`{"return": ${id + 1}}\n`)]));
          const real = new Uint8Array([0xff, ...enc.encode(`{"return": ${id}}\n`)]);
          await send(real.subarray(0, 4));
          await sleep(5);
          await send(real.subarray(4));
          break;
        }
        case "guest-shutdown":
          break; // The real agent never answers a successful shutdown.
        default:
          if (opts.late?.has(name)) held = { return: 99 };
          else if (opts.answers && name in opts.answers) await reply(opts.answers[name]);
          else if (name === "guest-ping") await reply({});
          else if (name === "guest-get-osinfo") await reply(OS_INFO);
          else if (name === "guest-network-get-interfaces") await reply(INTERFACES);
          else if (name === "guest-fsfreeze-freeze") await reply(2);
          else if (name === "guest-fsfreeze-thaw") await reply(2);
          else {
            await sendJson({
              error: { class: "CommandNotFound", desc: `The command ${name} has not been found` },
              id: cmd.id,
            });
          }
      }
      if (name !== "guest-sync-delimited" && ++answered === opts.closeAfter) conn.close();
    };

    let line: number[] = [];
    const buf = new Uint8Array(4096);
    try {
      for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
        for (const b of buf.subarray(0, n)) {
          if (b === 0xff) line = [];
          else if (b !== 0x0a) line.push(b);
          else {
            const text = new TextDecoder().decode(new Uint8Array(line));
            line = [];
            await handle(JSON.parse(text));
          }
        }
      }
    } catch {
      // Closed by us or by the client.
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
    received,
    connections: () => conns.size,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // Already closed.
        }
      }
      await acceptLoop;
      await Promise.all(loops);
    },
  };
}

async function withFakeAgent(
  opts: FakeAgentOptions,
  fn: (agent: GuestAgent, fake: ReturnType<typeof fakeAgent>) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "qga-test-" });
  const path = join(dir, "qga.sock");
  const fake = fakeAgent(path, opts);
  const agent = new GuestAgent(path, { timeoutMs: SLOW_MS });
  try {
    await fn(agent, fake);
  } finally {
    await agent.close();
    await fake.close();
    await Deno.remove(dir, { recursive: true });
  }
}

testWithTimeout({
  name: "qga: resyncs past stale data and decodes the agent's answers",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withFakeAgent({}, async (agent, fake) => {
    assertEquals(await agent.ping(), true);
    assertEquals(await agent.osInfo(), {
      id: "alpine",
      name: "Alpine Linux",
      prettyName: "Alpine Linux v3.20",
      version: "3.20.3",
      kernelRelease: "6.6.58-0-virt",
      machine: "x86_64",
    });
    assertEquals(await agent.interfaces(), [
      {
        name: "lo",
        mac: "00:00:00:00:00:00",
        addresses: [
          { type: "ipv4", address: "127.0.0.1", prefix: 8 },
          { type: "ipv6", address: "::1", prefix: 128 },
        ],
      },
      {
        name: "eth0",
        mac: "52:54:00:12:34:56",
        addresses: [{ type: "ipv4", address: "10.0.0.5", prefix: 24 }],
      },
      { name: "sit0", addresses: [] },
    ]);
    assertEquals(await agent.fsFreeze(), 2);
    assertEquals(await agent.fsThaw(), 2);
    assertEquals(fake.connections(), 1, "one lazily opened connection is reused");
    assertEquals(fake.received.filter((c) => c === "guest-sync-delimited").length, 1);
  });
});

testWithTimeout({
  name: "qga: concurrent calls are serialized over the one connection",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withFakeAgent({}, async (agent, fake) => {
    const results = await Promise.all([
      agent.osInfo().then((o) => o.id),
      agent.fsFreeze(),
      agent.ping(),
      agent.interfaces().then((i) => i.length),
      agent.fsThaw(),
      agent.ping(),
    ]);
    assertEquals(results, ["alpine", 2, true, 3, 2, true]);
    assertEquals(fake.connections(), 1);
  });
});

testWithTimeout({
  name: "qga: an error reply rejects with QmpError and the client stays usable",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withFakeAgent({}, async (agent) => {
    const err = await assertRejects(() => agent.execute("guest-bogus"), QmpError);
    assertEquals((err as QmpError).errorClass, "CommandNotFound");
    assertEquals(await agent.ping(), true);
  });
});

testWithTimeout({
  name: "qga: after a timeout the late reply is not taken for the next call",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withFakeAgent({ late: new Set(["guest-fsfreeze-thaw"]) }, async (agent, fake) => {
    assertEquals(await agent.ping(), true);
    await assertRejects(() => agent.fsThaw({ timeoutMs: 300 }), TimeoutError);
    // The fake answers the thaw (with 99) only when this call's sync arrives.
    assertEquals(await agent.fsFreeze(), 2);
    assertEquals(fake.connections(), 1);
  });
});

testWithTimeout(
  { name: "qga: shutdown without a reply counts as success", timeoutMs: 2 * MINUTE },
  async () => {
    await withFakeAgent({}, async (agent, fake) => {
      // Synced first, so the short bound only covers the (never coming) reply.
      assertEquals(await agent.ping(), true);
      await agent.shutdown("reboot", { timeoutMs: 300 });
      assert(fake.received.includes("guest-shutdown"));
      assertEquals(await agent.ping(), true);
    });
  },
);

testWithTimeout(
  { name: "qga: reconnects when the agent socket closed", timeoutMs: 2 * MINUTE },
  async () => {
    await withFakeAgent({ closeAfter: 1 }, async (agent, fake) => {
      assertEquals(await agent.ping(), true);
      assertEquals((await agent.osInfo()).id, "alpine");
      assertEquals(fake.connections(), 2);
    });
  },
);

testWithTimeout(
  { name: "qga: ping on a missing socket is false", timeoutMs: 2 * MINUTE },
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "qga-test-" });
    const agent = new GuestAgent(join(dir, "absent.sock"));
    try {
      assertEquals(await agent.ping(500), false);
    } finally {
      await agent.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

async function waitForFile(path: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await Deno.stat(path);
      return;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound) || Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
}

testWithTimeout({
  name: "qga: a VM without an agent times out, never throws from ping, stays usable",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "qga-test-" });
  const sock = join(dir, "qga.sock");
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      ...["-accel", "tcg", "-nodefaults", "-display", "none", "-S", "-m", "64"],
      ...["-chardev", `socket,id=qga0,path=${sock},server=on,wait=off`],
      ...["-device", "virtio-serial-pci"],
      ...["-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"],
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const agent = new GuestAgent(sock);
  try {
    await waitForFile(sock, SLOW_MS);
    assertEquals(await agent.ping(300), false);
    assertEquals(await agent.ping(300), false);
    await assertRejects(() => agent.osInfo({ timeoutMs: 300 }), TimeoutError);
    // Without a live agent there is no one to shut the guest down.
    await assertRejects(() => agent.shutdown("powerdown", { timeoutMs: 300 }), TimeoutError);
    assertEquals(await agent.ping(300), false);
  } finally {
    await agent.close();
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await child.output();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "qga: a hostile guest's huge strings and lists are cut to the caps before reporting",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const huge = "x".repeat(2_000) + "\u001b[2J";
  const answers = {
    "guest-get-osinfo": { "id": huge, "pretty-name": "evil\nline", "kernel-release": 42 },
    "guest-network-get-interfaces": Array.from({ length: 100 }, (_, i) => ({
      "name": `eth${i}${huge}`,
      "hardware-address": huge,
      "ip-addresses": Array.from({ length: 40 }, (_, j) => ({
        "ip-address-type": "ipv4",
        "ip-address": j === 0 ? huge : `10.0.${i % 256}.${j % 256}`,
        "prefix": j === 1 ? 1e9 : 24,
      })),
    })),
  };
  await withFakeAgent({ answers }, async (agent) => {
    const os = await agent.osInfo();
    assertEquals(os.id!.length, GUEST_LIMITS.stringChars);
    assertEquals(os.prettyName, "evil?line");
    assertEquals(os.kernelRelease, undefined);
    const ifaces = await agent.interfaces();
    assertEquals(ifaces.length, GUEST_LIMITS.interfaces);
    for (const i of ifaces) {
      assert(i.name.length <= GUEST_LIMITS.interfaceNameChars);
      assert(i.mac!.length <= GUEST_LIMITS.macChars);
      assertEquals(i.addresses.length, GUEST_LIMITS.addressesPerInterface);
      // The oversized address and the impossible prefix are dropped, not cut.
      assert(i.addresses.every((a) => a.address.startsWith("10.0.") && a.prefix === 24));
    }
    // What the host reports from it (host/vm_host.ts guestInfo) passes the leader's schema.
    const report = {
      agent: "ok" as const,
      os: { id: os.id, prettyName: os.prettyName },
      interfaces: ifaces.map((i) => ({
        name: i.name,
        mac: i.mac,
        addresses: i.addresses.map((a) => `${a.address}/${a.prefix}`),
      })),
    };
    const parsed = guestInfoSchema.safeParse(report);
    assert(parsed.success, JSON.stringify(parsed.error?.issues.slice(0, 3)));
  });
});
