import { assert, assertEquals } from "../../core/testing/assert.ts";
import { QemuDriver } from "./qemu.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { exportDisksForMirror, listenForMigration, listeningTcpPorts } from "./migration.ts";

/** Connects to `port` on loopback and closes: proves something listens there. */
async function accepts(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

testWithTimeout({
  name: "an incoming QEMU binds its NBD and migration ports itself and both are read back",
  timeoutMs: MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-incoming-" });
  const disk = `${dir}/root.qcow2`;
  await new Deno.Command("qemu-img", { args: ["create", "-q", "-f", "qcow2", disk, "16M"] })
    .output();
  const driver = await new QemuDriver(`${dir}/h`).init();
  const qemu = await driver.launch({
    name: "v",
    uuid: crypto.randomUUID(),
    cpus: 1,
    memoryMiB: 64,
    accel: "tcg",
    disks: [{ id: "root", path: disk, format: "qcow2" }],
    nics: [],
    generation: 0,
    incoming: "defer",
  });
  try {
    assertEquals(await listeningTcpPorts(qemu.pid), new Set(), "no TCP listener before");
    const nbdPort = await exportDisksForMirror(qemu, "127.0.0.1", ["root"]);
    const migrationPort = await listenForMigration(qemu, "127.0.0.1");
    assert(nbdPort > 0 && migrationPort > 0 && nbdPort !== migrationPort, `${nbdPort}`);
    assertEquals(await listeningTcpPorts(qemu.pid), new Set([nbdPort, migrationPort]));
    // Connect to the NBD port only: a connection to the migration port starts the migration.
    assert(await accepts(nbdPort), `QEMU's NBD server accepts on ${nbdPort}`);
  } finally {
    await qemu.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
