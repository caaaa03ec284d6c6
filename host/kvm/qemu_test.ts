import { assert, assertEquals } from "../../core/testing/assert.ts";
import { guestRunsUnder } from "./accel.ts";
import { QemuDriver } from "./qemu.ts";

Deno.test("the accelerator probe runs a guest to completion under TCG", async () => {
  assertEquals(await guestRunsUnder("tcg"), true);
});

Deno.test("QEMU arguments: paused, daemonized, no default devices, explicit disks and NICs", () => {
  const driver = new QemuDriver("/var/lib/novactl/vms");
  const spec = {
    name: "web1",
    uuid: "0b0e8a52-7a7e-4c43-9b0c-2a4a1b0c9d10",
    cpus: 2,
    memoryMiB: 512,
    accel: "tcg" as const,
    disks: [
      { id: "root", path: "/p/root.qcow2", format: "qcow2" as const },
      { id: "seed", path: "/p/seed.iso", format: "raw" as const, readOnly: true },
    ],
    nics: [{ id: "net0", mac: "52:54:00:0b:0e:8a" }],
    generation: 0,
  };
  const args = driver.args(spec, driver.paths("web1"));
  for (const a of ["-S", "-daemonize", "-nodefaults", "-no-user-config"]) {
    assert(args.includes(a), `${a} in ${args.join(" ")}`);
  }
  const joined = args.join(" ");
  assert(joined.includes("-pidfile /var/lib/novactl/vms/web1/qemu.pid"));
  assert(joined.includes("path=/var/lib/novactl/vms/web1/qmp.sock,server=on,wait=off"));
  assert(joined.includes("name=org.qemu.guest_agent.0"));
  const blockdevs = args.flatMap((a, i) => args[i - 1] === "-blockdev" ? [JSON.parse(a)] : []);
  assertEquals(blockdevs.map((b) => [b["node-name"], b.driver, b["read-only"]]), [
    ["root", "qcow2", false],
    ["seed", "raw", true],
  ]);
  assert(joined.includes("virtio-blk-pci,drive=root,id=root-dev,bootindex=1"));
  assert(joined.includes("virtio-net-pci,netdev=net0,id=net0-dev,mac=52:54:00:0b:0e:8a"));
});

Deno.test("socket paths longer than sun_path are refused with the reason", () => {
  const driver = new QemuDriver("/" + "x".repeat(120));
  let msg = "";
  try {
    driver.paths("web1");
  } catch (err) {
    msg = (err as Error).message;
  }
  assert(/shorter --data-dir/.test(msg), msg);
});
