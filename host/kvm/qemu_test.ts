import { assert, assertEquals } from "../../core/testing/assert.ts";
import { guestRunsUnder } from "./accel.ts";
import {
  DiskLockedError,
  displayOf,
  processAlive,
  QemuDriver,
  startFailure,
  VGA_MEM_MB,
} from "./qemu.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { bootTimeMs } from "../../core/cluster/lease.ts";
import { WatchdogClient } from "../fencing/client.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

testWithTimeout({
  name: "the accelerator probe runs a guest to completion under TCG",
  timeoutMs: 2 * MINUTE,
}, async () => {
  assertEquals(await guestRunsUnder("tcg"), true);
});

testWithTimeout({
  name: "QEMU arguments: paused, confined, no default devices, explicit disks and NICs",
  timeoutMs: 2 * MINUTE,
}, () => {
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
  driver.user = { name: "novactl-qemu", uid: 999, gid: 999 };
  driver.version = { major: 7, minor: 2, micro: 22 };
  const args = driver.args(spec, driver.paths("web1"));
  for (const a of ["-S", "-nodefaults", "-no-user-config"]) {
    assert(args.includes(a), `${a} in ${args.join(" ")}`);
  }
  // Its seccomp filter forbids fork, which -daemonize needs.
  assert(!args.includes("-daemonize"), args.join(" "));
  const joined = args.join(" ");
  assert(joined.includes("-runas novactl-qemu"), joined);
  assert(joined.includes("-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny,"), joined);
  // An HA VM drops root too; its jail, not QEMU, writes its pidfile (QEMU's pid in there is 2).
  const ha = driver.args({ ...spec, fenced: true }, driver.paths("web1")).join(" ");
  assert(ha.includes("-runas novactl-qemu"), ha);
  assert(!ha.includes("-pidfile"), ha);
  // QEMU 10 has no -runas: the same user through -run-with, the filter unchanged.
  driver.version = { major: 10, minor: 0, micro: 2 };
  const q10 = driver.args(spec, driver.paths("web1")).join(" ");
  assert(q10.includes("-run-with user=novactl-qemu"), q10);
  assert(!q10.includes("-runas"), q10);
  assert(q10.includes("-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny,"), q10);
  driver.version = { major: 7, minor: 2, micro: 22 };
  assert(joined.includes("-netdev user,id=net0,restrict=on"), joined);
  // A NIC on a network: its tap, without the vnet header OVS's userspace datapath mishandles.
  const tapped = driver.args(
    { ...spec, nics: [{ id: "net0", mac: "02:6e:76:00:00:01", tap: "nt0b0e8a527a0" }] },
    driver.paths("web1"),
  ).join(" ");
  assert(
    tapped.includes(
      "-netdev tap,id=net0,ifname=nt0b0e8a527a0,script=no,downscript=no,vnet_hdr=off",
    ),
    tapped,
  );
  assert(!tapped.includes("user,id=net0"), tapped);
  assert(!tapped.includes("pcie-root-port"), "no ports for NICs without one");
  // NICs with ports: every port from the start (hot-plug needs them), each NIC on its own.
  const ported = driver.args(
    { ...spec, nics: [{ id: "net1", mac: "02:6e:76:00:00:02", tap: "nt0b0e8a527a1", port: 1 }] },
    driver.paths("web1"),
  );
  const ports = ported.filter((a) => a.startsWith("pcie-root-port"));
  assertEquals(ports.length, 8);
  assertEquals(ports[1], "pcie-root-port,id=nvrp1,bus=pcie.0,chassis=2,addr=0x11");
  assert(ported.join(" ").includes("id=net1-dev,mac=02:6e:76:00:00:02,romfile=,bus=nvrp1"));
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
  assert(joined.includes("user,id=net0,restrict=on"), "guests cannot reach the host via 10.0.2.2");
});

testWithTimeout({
  name: "socket paths longer than sun_path are refused with the reason",
  timeoutMs: 2 * MINUTE,
}, () => {
  const driver = new QemuDriver("/" + "x".repeat(120));
  let msg = "";
  try {
    driver.paths("web1");
  } catch (err) {
    msg = (err as Error).message;
  }
  assert(/shorter --data-dir/.test(msg), msg);
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "a disk locked by another QEMU is the reason a start fails, never an empty one",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-lock-" });
  const disk = `${dir}/shared.qcow2`;
  await new Deno.Command("qemu-img", { args: ["create", "-q", "-f", "qcow2", disk, "16M"] })
    .output();
  const spec = (name: string) => ({
    name,
    uuid: crypto.randomUUID(),
    cpus: 1,
    memoryMiB: 64,
    accel: "tcg" as const,
    disks: [{ id: "root", path: disk, format: "qcow2" as const }],
    nics: [],
    generation: 0,
  });
  const first = await new QemuDriver(`${dir}/h1`).init().then((d) => d.launch(spec("v")));
  try {
    const err = await new QemuDriver(`${dir}/h2`).init().then((d) => d.launch(spec("v"))).then(
      () => null,
      (e: Error) => e,
    );
    assert(err instanceof DiskLockedError, String(err));
    assertEquals(err.message, "disk root of v is locked by another QEMU");
  } finally {
    await first.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "QEMU's stderr becomes the reason, without timestamps; never empty",
  timeoutMs: 2 * MINUTE,
}, () => {
  const spec = {
    name: "v",
    uuid: "u",
    cpus: 1,
    memoryMiB: 64,
    accel: "tcg" as const,
    disks: [],
    nics: [],
    generation: 0,
  };
  const bad = startFailure(
    spec,
    "2026-12-01T21:35:21.361803Z qemu-system-x86_64: -m 1T: cannot set up guest memory\n",
    "exit code 1",
  );
  assertEquals(bad.message, "qemu failed to start v: -m 1T: cannot set up guest memory");
  assertEquals(
    startFailure(spec, "\n", "exit code 1").message,
    "qemu failed to start v: exit code 1",
  );
});

testWithTimeout({
  name: "QEMU runs as its own user under seccomp in its own session, and still writes its disks",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-confined-" }); // 0700, like a data dir
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
  });
  try {
    const status = await Deno.readTextFile(`/proc/${qemu.pid}/status`);
    const field = (name: string) => new RegExp(`^${name}:\\s+(.*)$`, "m").exec(status)?.[1];
    assertEquals(field("Seccomp"), "2", "seccomp filter mode");
    if (Deno.uid() === 0) {
      assert(driver.user, "as root QEMU drops to novactl-qemu (scripts/setup.sh creates it)");
      const uids = field("Uid")!.split(/\s+/).map(Number);
      assertEquals(uids, [driver.user.uid, driver.user.uid, driver.user.uid, driver.user.uid]);
      assertEquals(field("CapEff"), "0000000000000000");
      assertEquals(field("CapPrm"), "0000000000000000");
    }
    const sid = Number(
      (await Deno.readTextFile(`/proc/${qemu.pid}/stat`)).split(") ")[1]
        .split(" ")[3],
    );
    assertEquals(sid, qemu.pid, "QEMU leads a session of its own");
    // After the drop QEMU can no longer open the root-owned image in a 0700 dir, but it keeps
    // the descriptors it opened before: a memory snapshot writes through them.
    await qemu.cont();
    await qemu.qmp.execute("snapshot-save", {
      "job-id": "s",
      tag: "s1",
      vmstate: "root",
      devices: ["root"],
    });
    let job: { status: string; error?: string } | undefined;
    for (let i = 0; i < 400; i++) {
      job = (await qemu.qmp.execute<{ id: string; status: string; error?: string }[]>(
        "query-jobs",
      )).find((j) => j.id === "s");
      if (job?.status === "concluded") break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assertEquals(job?.status, "concluded");
    assertEquals(job?.error, undefined, "snapshot-save succeeded");
  } finally {
    await qemu.kill();
  }
  const out = await new Deno.Command("qemu-img", { args: ["snapshot", "-l", disk] }).output();
  assert(new TextDecoder().decode(out.stdout).includes("s1"), "the snapshot is in the image");
  await Deno.remove(dir, { recursive: true });
});

testWithTimeout({
  name: "an HA QEMU runs as novactl-qemu and still dies at once with the watchdog that started it",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-pdeathsig-" });
  const driver = await new QemuDriver(`${dir}/h`).init();
  // The real watchdog (`novactl host watchdog`), as a node starts it.
  const watchdog = await WatchdogClient.attach(dir, [Deno.execPath(), "run", "-A", MAIN]);
  driver.fencedSpawner = watchdog;
  let pid = 0;
  try {
    await watchdog.feed(bootTimeMs() + 60_000);
    const qemu = await driver.launch({
      name: "ha",
      uuid: crypto.randomUUID(),
      cpus: 1,
      memoryMiB: 64,
      accel: "tcg",
      disks: [],
      nics: [],
      generation: 0,
      fenced: true,
    });
    pid = qemu.pid;
    qemu.close();
    // The pid the node knows (pidfile) is QEMU's host pid, and QEMU dropped root.
    assert((await Deno.readTextFile(`/proc/${pid}/cmdline`)).startsWith(driver.binary));
    assertEquals((await WatchdogClient.probe(dir))?.children, [{ name: "ha", pid }]);
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const field = (name: string) => new RegExp(`^${name}:\\s+(.*)$`, "m").exec(status)?.[1];
    assertEquals(field("Seccomp"), "2", "seccomp filter mode");
    if (Deno.uid() === 0) {
      assert(driver.user, "as root QEMU drops to novactl-qemu (scripts/setup.sh creates it)");
      const uids = field("Uid")!.split(/\s+/).map(Number);
      assertEquals(uids, [driver.user.uid, driver.user.uid, driver.user.uid, driver.user.uid]);
      assertEquals(field("CapEff"), "0000000000000000");
      // Not PDEATHSIG (the uid change cleared it): it lives in a PID namespace of its own.
      assertEquals(field("NSpid")!.split(/\s+/).length, 2, `NSpid: ${field("NSpid")}`);
    }
    // SIGKILL leaves the watchdog no say: only the kernel can take QEMU along.
    Deno.kill(watchdog.pid, "SIGKILL");
    let gone = false;
    for (let i = 0; i < 100 && !gone; i++) {
      gone = !processAlive(pid);
      if (!gone) await new Promise((r) => setTimeout(r, 50));
    }
    assert(gone, "the HA QEMU died with the watchdog");
  } finally {
    watchdog.close();
    for (const p of [pid, watchdog.pid]) {
      try {
        if (p) Deno.kill(p, "SIGKILL");
      } catch { /* gone */ }
    }
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "QEMU arguments: interactive consoles (serial socket still logged, VNC), or a log only",
  timeoutMs: 2 * MINUTE,
}, () => {
  const driver = new QemuDriver("/var/lib/novactl/vms");
  const spec = {
    name: "web1",
    uuid: "0b0e8a52-7a7e-4c43-9b0c-2a4a1b0c9d10",
    cpus: 1,
    memoryMiB: 128,
    accel: "tcg" as const,
    disks: [],
    nics: [],
    generation: 0,
  };
  driver.version = { major: 7, minor: 2, micro: 22 };
  const dir = "/var/lib/novactl/vms/web1";
  const interactive = driver.args({ ...spec, consoles: true }, driver.paths("web1")).join(" ");
  assert(
    interactive.includes(
      `-chardev socket,id=serial0,path=${dir}/serial.sock,server=on,wait=off,` +
        `logfile=${dir}/console.log,logappend=on -serial chardev:serial0`,
    ),
    interactive,
  );
  assert(interactive.includes(`-vnc unix:${dir}/vnc.sock`), interactive);
  // A QEMU started before interactive consoles (re-adopted from its launch.json): a log only.
  const legacy = driver.args(spec, driver.paths("web1")).join(" ");
  assert(legacy.includes(`-chardev file,id=serial0,path=${dir}/console.log,append=on`), legacy);
  assert(!legacy.includes("-vnc"), legacy);
  assert(!legacy.includes("serial.sock"), legacy);
});

testWithTimeout({
  name: "QEMU arguments: a VGA display at a fixed slot when asked, none otherwise (absent: none)",
  timeoutMs: MINUTE,
}, () => {
  const driver = new QemuDriver("/var/lib/novactl/vms");
  const spec = {
    name: "web1",
    uuid: "0b0e8a52-7a7e-4c43-9b0c-2a4a1b0c9d10",
    cpus: 1,
    memoryMiB: 128,
    accel: "tcg" as const,
    disks: [],
    nics: [],
    generation: 0,
    consoles: true,
  };
  driver.version = { major: 7, minor: 2, micro: 22 };
  const p = driver.paths("web1");
  const vga = driver.args({ ...spec, display: "vga" }, p).join(" ");
  assert(vga.includes(`-device VGA,id=video0,vgamem_mb=${VGA_MEM_MB},bus=pcie.0,addr=0x1e`), vga);
  // -nodefaults stays: the one display device is ours, and no other default device comes back.
  assert(vga.includes("-nodefaults"), vga);
  assertEquals(vga.match(/VGA|bochs-display|virtio-vga/g)?.length, 1, vga);
  for (const none of [{ ...spec, display: "none" as const }, spec]) {
    const a = driver.args(none, p).join(" ");
    assert(!/VGA|bochs-display|virtio-vga/.test(a), a);
  }
  assertEquals(displayOf({}), "none");
  assertEquals(displayOf({ display: "vga" }), "vga");
});
