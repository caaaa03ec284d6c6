/**
 * Live-migration soak without a cluster: two QEMUs launched by novactl's driver
 * (host/kvm/qemu.ts, the same command line), migrated back and forth with
 * novactl's QMP sequence (host/kvm/migration.ts: TLS, dirty-bitmaps, NBD mirror of
 * a local disk), the destination resumed after `completed` as host/migrator.ts
 * does. The test guest (scripts/build_guest.sh) has a virtio-net NIC on a tap in
 * a bridge, pinged from the host; after each migration the guest must print
 * console counter lines, answer its agent and answer pings. A guest that fails
 * is reported with its console tail and the NIC's queue state, then replaced by
 * a fresh one so the count goes on.
 *
 * Run as root inside a network namespace that has the bridge and taps
 * (scripts/migration_soak.sh sets one up; on shared machines hold the guest lock):
 *   flock /tmp/novactl-guest.lock nice -n 5 bash scripts/migration_soak.sh \
 *     [--migrations 40] [--plain] [--no-bitmaps] [--no-nic] [--no-disk] [--accel tcg]
 *     [--cpus 1] [--memory 128] [--dirty] [--downtime 50] [--bandwidth MiB/s]
 *     [--qemu BINARY] [--out FILE]
 * --plain: TCP without TLS (needs --no-disk); --dirty: the guest rewrites a tmpfs file
 * for ever; --qemu: another QEMU binary (a wrapper script is fine).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { QemuDriver, type QemuVm } from "../host/kvm/qemu.ts";
import {
  cancelMirrors,
  exportDisksForMirror,
  incomingOnFreePort,
  listenForMigration,
  migrateMemory,
  mirrorDisks,
  resumeIncoming,
  setUpIncomingTls,
  setUpOutgoingTls,
  stopDiskExports,
} from "../host/kvm/migration.ts";
import {
  migrate,
  migrateSetCapabilities,
  migrateSetParameters,
  queryMigrate,
} from "../host/kvm/commands.ts";
import { makeCa, makeNodeCert } from "../host/kvm/test_pki.ts";
import type { NodeTlsPaths } from "../host/kvm/tls.ts";
import type { Accel } from "../host/kvm/accel.ts";

const str = (d: string) => ({ type: "string" as const, default: d });
const bool = { type: "boolean" as const, default: false };
const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    migrations: str("40"),
    accel: str("tcg"),
    cpus: str("1"),
    memory: str("128"),
    downtime: str("50"),
    bandwidth: str("10240"),
    out: str(""),
    guest: str(`${Deno.env.get("HOME")}/.cache/novactl/guest`),
    "cmdline-extra": str(""),
    qemu: str("qemu-system-x86_64"),
    plain: bool,
    "no-bitmaps": bool,
    "no-nic": bool,
    "no-disk": bool,
    dirty: bool,
    "idle-guest": bool,
    "stop-first": bool,
    "ping-interval": str("0.1"),
    keep: bool,
  },
});
const N = Number(args.migrations);
const GUEST_IP = "10.99.0.2";
const HOST_IP = "10.99.0.1";
const MAC = "52:54:00:5a:00:02";
const HOST = "127.0.0.1";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const root = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "migsoak-" });
console.log(`root ${root}; ${JSON.stringify(args)}`);
const ca = await makeCa(`${root}/ca`, "novactl cluster CA");
const certs: NodeTlsPaths[] = [
  await makeNodeCert(`${root}/n1`, ca, "n1", { ips: [HOST] }),
  await makeNodeCert(`${root}/n2`, ca, "n2", { ips: [HOST] }),
];
const nodeName = (side: number) => `n${side + 1}`;
const guestDir = args.guest;
const cmdline = (await Deno.readTextFile(`${guestDir}/cmdline`)).trim() +
  ` novactl.ip=${GUEST_IP}/24 ${args["cmdline-extra"]}`;

let incarnation = 0;
async function launch(side: number, incoming: boolean): Promise<QemuVm> {
  const dir = `${root}/side${side}/i${incarnation++}`;
  await Deno.mkdir(dir, { recursive: true });
  const disk = `${dir}/root.qcow2`;
  if (!args["no-disk"]) {
    const r = await new Deno.Command("qemu-img", {
      args: ["create", "-q", "-f", "qcow2", disk, "64M"],
    }).output();
    if (!r.success) throw new Error("qemu-img failed");
  }
  const driver = await new QemuDriver(`${dir}/vms`, args.qemu).init();
  const qemu = await driver.launch({
    name: "g",
    uuid: "6a1c3f4e-2b7d-4c55-9f0e-1d2c3b4a5968",
    cpus: Number(args.cpus),
    memoryMiB: Number(args.memory),
    accel: args.accel as Accel,
    kernel: { path: `${guestDir}/vmlinuz`, initrd: `${guestDir}/initrd.img`, cmdline },
    disks: args["no-disk"] ? [] : [{ id: "root", path: disk, format: "qcow2" }],
    nics: args["no-nic"] ? [] : [{ id: "net0", mac: MAC, tap: `mstap${side}`, port: 0 }],
    generation: 0,
    ...(incoming ? { incoming: "defer" } : {}),
  });
  return qemu;
}

/** The last lines of every QEMU's stderr log of this run, newest incarnations last. */
async function qemuLogs(): Promise<string[]> {
  const out: string[] = [];
  for (const side of [0, 1]) {
    for (let i = Math.max(0, incarnation - 3); i < incarnation; i++) {
      const f = `${root}/side${side}/i${i}/vms/g/qemu.log`;
      const t = await Deno.readTextFile(f).catch(() => null);
      if (t) out.push(`${f}:\n${t.split("\n").slice(-6).join("\n")}`);
    }
  }
  return out;
}

async function consoleText(vm: QemuVm): Promise<string> {
  return await Deno.readTextFile(vm.paths.console).catch(() => "");
}

const counters = (text: string) => [...text.matchAll(/NOVACTL-COUNTER (\d+)/g)].length;

async function until<T>(what: string, f: () => Promise<T | undefined>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(100);
  }
}

async function hostPing(count: number): Promise<number> {
  // busybox: the host has no iputils.
  const o = await new Deno.Command("busybox", {
    args: ["ping", "-c", String(count), "-i", "0.2", "-w", String(count), GUEST_IP],
    stdout: "piped",
    stderr: "null",
  }).output();
  const m = /(\d+) packets received/.exec(new TextDecoder().decode(o.stdout));
  return m ? Number(m[1]) : 0;
}

async function boot(side: number): Promise<QemuVm> {
  const vm = await launch(side, false);
  await vm.cont();
  await until("guest ready", async () => {
    const t = await consoleText(vm);
    return t.includes("NOVACTL-GUEST-READY") ? true : undefined;
  }, 90_000);
  await until("agent", async () => (await vm.agent.ping(1_000)) ? true : undefined, 30_000);
  if (args.dirty) {
    // Memory traffic in the guest: a tmpfs file rewritten for ever.
    await vm.agent.execute("guest-exec", {
      path: "/bin/sh",
      arg: [
        "-c",
        "while :; do dd if=/dev/urandom of=/tmp/x bs=64k count=160 2>/dev/null; done " +
        ">/dev/null 2>&1 </dev/null &",
      ],
    });
  }
  if (!args["no-nic"]) {
    // --idle-guest: no process of its own in the guest that wakes (and switches address
    // space, which flushes TCG's TLB) every 100 ms; it only answers the host's pings.
    if (!args["idle-guest"]) {
      await vm.agent.execute("guest-exec", {
        path: "/bin/sh",
        arg: ["-c", `ping -q -i 0.1 ${HOST_IP} >/dev/null 2>&1 </dev/null &`],
      });
    }
    await until(
      "guest answers pings",
      async () => (await hostPing(2)) > 0 ? true : undefined,
      30_000,
    ).catch(async (err) => {
      const r = await vm.agent.run("/bin/sh", ["-c", "ip addr; ip route; cat /proc/cmdline"]);
      console.log(r.stdout, r.stderr);
      await vm.kill();
      throw err;
    });
  }
  return vm;
}

/** novactl's QMP sequence, or a variant of it (plain TCP, no dirty-bitmaps). */
async function migrateOnce(
  source: QemuVm,
  sourceSide: number,
): Promise<{ dest: QemuVm; info: Record<string, unknown> }> {
  const destSide = 1 - sourceSide;
  const dest = await launch(destSide, true);
  try {
    return await migrateInto(source, dest, sourceSide, destSide);
  } catch (err) {
    // A failed attempt's destination holds the other side's tap: the next one needs it.
    await dest.kill().catch(() => {});
    throw err;
  }
}

async function migrateInto(
  source: QemuVm,
  dest: QemuVm,
  sourceSide: number,
  destSide: number,
): Promise<{ dest: QemuVm; info: Record<string, unknown> }> {
  const disks = args["no-disk"] ? [] : ["root"];
  const never = new AbortController().signal;
  let nbdPort = 0;
  let migrationPort: number;
  let tlsCreds = "";
  if (!args.plain) {
    tlsCreds = await setUpOutgoingTls(source, certs[sourceSide]);
    const tls = await setUpIncomingTls(dest, certs[destSide], [nodeName(sourceSide)]);
    if (disks.length) nbdPort = await exportDisksForMirror(dest, HOST, disks, tls);
    if (args["no-bitmaps"]) {
      await migrateSetCapabilities(dest.qmp, { events: true });
      await migrateSetParameters(dest.qmp, { "tls-creds": tls.creds, "tls-authz": tls.authz });
      migrationPort = await incomingOnFreePort(dest.qmp, HOST);
    } else {
      migrationPort = await listenForMigration(dest, HOST, tls);
    }
  } else {
    if (disks.length) throw new Error("--plain needs --no-disk (the NBD export is TLS)");
    await migrateSetCapabilities(dest.qmp, { events: true, "dirty-bitmaps": !args["no-bitmaps"] });
    migrationPort = await incomingOnFreePort(dest.qmp, HOST);
  }
  if (disks.length) {
    await mirrorDisks(source, { host: HOST, port: nbdPort }, disks, tlsCreds, () => {}, never);
  }
  const stopped = source.qmp.waitForEvent("STOP", { timeoutMs: 120_000 });
  stopped.catch(() => {});
  let mem: Record<string, unknown>;
  if (!args.plain && !args["no-bitmaps"]) {
    mem = {
      ...await migrateMemory(
        source,
        { host: HOST, port: migrationPort },
        tlsCreds,
        {
          downtimeLimitMs: Number(args.downtime),
          bandwidthBytesPerSec: Number(args.bandwidth) * 2 ** 20,
          timeoutMs: 120_000,
          stopFirst: args["stop-first"],
        },
        () => {},
        never,
      ),
    };
  } else {
    await migrateSetCapabilities(source.qmp, {
      events: true,
      "dirty-bitmaps": !args["no-bitmaps"],
    });
    await migrateSetParameters(source.qmp, {
      "downtime-limit": Number(args.downtime),
      "max-bandwidth": Number(args.bandwidth) * 2 ** 20,
      ...(args.plain ? {} : { "tls-creds": tlsCreds, "tls-hostname": HOST }),
    });
    const finished = source.qmp.waitForEvent("MIGRATION", {
      timeoutMs: 120_000,
      match: (e) => ["completed", "failed", "cancelled"].includes(String(e.data?.status)),
    });
    await migrate(source.qmp, { host: HOST, port: migrationPort });
    const ev = await finished;
    if (ev.data?.status !== "completed") throw new Error(`migration ${ev.data?.status}`);
    const info = await queryMigrate(source.qmp);
    mem = { totalMs: info["total-time"], downtimeMs: info.downtime };
  }
  await stopped;
  // host/migrator.ts: the Raft commit of the move comes between completion and the resume.
  await sleep(20);
  await resumeIncoming(dest, 30_000);
  if (disks.length) await stopDiskExports(dest);
  if (disks.length) await cancelMirrors(source, disks).catch(() => {});
  await source.kill();
  return { dest, info: mem };
}

async function netQueueState(vm: QemuVm): Promise<unknown> {
  const out: Record<string, unknown> = {};
  try {
    const paths = await vm.qmp.execute<{ name: string; path: string }[]>("x-query-virtio");
    for (const p of paths) {
      if (!/net/.test(p.name)) continue;
      for (const q of [0, 1]) {
        out[`${p.path}#${q}`] = await vm.qmp.execute("x-query-virtio-queue-status", {
          path: p.path,
          queue: q,
        });
      }
    }
  } catch (err) {
    out.error = String(err);
  }
  return out;
}

/** After a migration: counter lines keep coming, the agent answers, the NIC answers pings. */
async function healthy(vm: QemuVm): Promise<{ ok: boolean; why: string[] }> {
  const why: string[] = [];
  const start = counters(await consoleText(vm));
  const deadline = Date.now() + 12_000;
  let c = start;
  while (Date.now() < deadline && c < start + 3) {
    await sleep(250);
    c = counters(await consoleText(vm));
  }
  if (c < start + 3) why.push(`counter: ${c - start} new lines in 12 s`);
  if (!(await vm.agent.ping(4_000).catch(() => false))) why.push("agent: no answer in 4 s");
  if (!args["no-nic"]) {
    const got = await hostPing(5);
    if (got === 0) why.push("net: 0 of 5 pings answered");
  }
  return { ok: why.length === 0, why };
}

const results: {
  i: number;
  from: number;
  ok: boolean;
  why?: string[];
  info?: Record<string, unknown>;
  error?: string;
}[] = [];
let side = 0;
let vm = await boot(side);
// The guest also answers a ping every 100 ms, as the target of bench:net's migration case does.
const pinger = args["no-nic"] ? null : new Deno.Command("busybox", {
  args: ["ping", "-q", "-i", args["ping-interval"], GUEST_IP],
  stdout: "null",
  stderr: "null",
}).spawn();
let bad = 0;
const t0 = Date.now();
for (let i = 1; i <= N; i++) {
  try {
    const { dest, info } = await migrateOnce(vm, side);
    vm = dest;
    side = 1 - side;
    const h = await healthy(vm);
    results.push({ i, from: 1 - side, ok: h.ok, why: h.why, info });
    console.log(
      `migration ${i} ${1 - side}→${side}: ${h.ok ? "ok" : "BAD " + h.why.join("; ")} ` +
        JSON.stringify(info),
    );
    if (!h.ok) {
      bad++;
      const tail = (await consoleText(vm)).split("\n").slice(-25).join("\n");
      console.log(`console tail:\n${tail}`);
      console.log(`virtio-net queues: ${JSON.stringify(await netQueueState(vm))}`);
      const regs = await vm.qmp.execute("human-monitor-command", {
        "command-line": "info registers",
      }).catch((e) => String(e));
      console.log(`registers:\n${String(regs).split("\n").slice(0, 4).join("\n")}`);
      await vm.kill();
      side = 0;
      vm = await boot(side);
    }
  } catch (err) {
    results.push({ i, from: side, ok: false, error: String(err) });
    console.log(`migration ${i}: ERROR ${err}`);
    for (const f of await qemuLogs()) console.log(f);
    bad++;
    await vm.kill().catch(() => {});
    side = 0;
    vm = await boot(side);
  }
}
await vm.kill().catch(() => {});
try {
  pinger?.kill();
} catch { /* gone */ }
const summary = { bad, of: N, seconds: Math.round((Date.now() - t0) / 1000), args };
console.log(`SUMMARY ${JSON.stringify(summary)}`);
if (args.out) await Deno.writeTextFile(args.out, JSON.stringify({ summary, results }, null, 2));
if (!args.keep) await Deno.remove(root, { recursive: true }).catch(() => {});
Deno.exit(0);
