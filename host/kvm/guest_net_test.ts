import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { testGuest } from "../../bench/lib/guest.ts";
import { QemuDriver } from "./qemu.ts";

testWithTimeout({
  name: "a guest on user-mode networking cannot reach a service on the host's 127.0.0.1",
  timeoutMs: 4 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const guest = await testGuest();
  const dir = await Deno.makeTempDir({ prefix: "novactl-guestnet-" });
  // Stands for the node's own API or any other loopback-only service of the host.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let accepted = 0;
  const serving = (async () => {
    for await (const conn of listener) {
      accepted++;
      conn.close();
    }
  })().catch(() => {});
  const qemu = await (await new QemuDriver(`${dir}/h`).init()).launch({
    name: "g",
    uuid: crypto.randomUUID(),
    cpus: 1,
    memoryMiB: 256,
    accel: "tcg",
    kernel: { path: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline },
    disks: [],
    nics: [{ id: "net0", mac: "52:54:00:12:34:56" }],
    generation: 0,
  });
  try {
    await qemu.cont();
    let up = false;
    for (let i = 0; i < 120 && !up; i++) {
      const ifs = await qemu.agent.interfaces({ timeoutMs: 2_000 }).catch(() => []);
      up = ifs.some((i) => i.addresses.some((a) => a.address === "10.0.2.15"));
      if (!up) await new Promise((r) => setTimeout(r, 500));
    }
    assert(up, "the guest got its address from user-mode networking's DHCP");
    // 10.0.2.2 is where user-mode networking puts the host's loopback.
    const r = await qemu.agent.run("/bin/sh", [
      "-c",
      `echo hello | nc -w 5 10.0.2.2 ${port}; echo "nc exit $?"`,
    ], 60_000);
    assert(/nc exit \d+/.test(r.stdout), `the probe ran: ${JSON.stringify(r)}`);
    assertEquals(accepted, 0, `no connection from the guest reached 127.0.0.1:${port}`);
  } finally {
    await qemu.kill();
    listener.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
});
