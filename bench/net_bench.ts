/**
 * Networking benchmark, security-group part: how long a rule change takes to
 * be enforced on every host.
 *
 * Three real nodes, each in its own network namespace with its own Open
 * vSwitch and ovn-controller (bench/lib/net_cluster.ts). One overlay network,
 * 100 NICs (VMs created stopped, pinned round-robin to the hosts; each NIC's
 * logical port bound by hand to an OVS internal port on its host, as a tap
 * would be, so no guest boots) in 10 security groups holding 1,000 rules in
 * all. Every group has members on every host.
 *
 * Each sample: `POST /api/v1/security-groups/G/rules` with an ingress tcp rule
 * for a port no other rule names → that port's flows in `br-int` on every
 * host (`ovs-ofctl dump-flows br-int tcp,tp_dst=PORT`, polled). That covers
 * the Raft commit, the leader's northbound pass, ovn-northd and every
 * ovn-controller. Goal: p50 ≤ 300 ms.
 *
 * Anchor, in the same run, interleaved: the same change made straight in
 * OVN (`ovn-nbctl acl-add` on a port group of the same ports, not novactl's)
 * → its flows on every host: what OVN alone needs.
 *
 * Migration part: packets lost during a live migration at a 100 ms ping
 * interval. Two real nodes in namespaces, an overlay network, guest A on n1
 * pinging guest B (busybox `ping -i 0.1`) while B live-migrates n1 → n2 and
 * back, `--migrations` times in all; each sample is the pings B never
 * answered (bench/lib/net_migration.ts, shared with
 * tests/network_migration_test.ts). Goal: ≤ 2 lost.
 *
 * DHCP part: VM create with a NIC → the guest's DHCP lease. Two real nodes in
 * namespaces, an overlay network; each sample `POST /api/v1/vms` (start, one
 * NIC on the network, pinned to n2) → OVN's DHCPACK to the NIC's MAC leaving
 * on its tap in n2's namespace (tcpdump's capture time, bench/lib/dhcp_watch.ts).
 * Anchor, in turn with it in the same run: a fresh 1 GiB qcow2 (novactl's root
 * disk for a kernel image, made inside the clock as novactl makes its own), a
 * logical port made by hand on a switch made by hand (the same DHCP options)
 * and a tap plugged by hand into n2's `br-int`, then the same guest (same
 * kernel, initramfs, cmdline, memory, the driver's QEMU arguments with the
 * devices novactl's launch spec has) launched by hand in n2's namespace → the
 * same DHCPACK (bench/lib/bare_ovn.ts, bench/lib/bare_qemu.ts). A third side,
 * the plain anchor, is the anchor without novactl's devices (serial to a file,
 * no VNC or display, no disk hot-plug ports). Overhead is novactl minus anchor
 * within each pair. Every start is also split at points all sides share
 * (bench/lib/start_marks.ts): QEMU up (its QMP socket made), the guest's vCPU
 * first running, its first DHCPDISCOVER; the guest's boot (vCPU → DISCOVER)
 * varies by hundreds of ms under TCG, the other spans by tens, so the overhead
 * without the boot resolves what novactl adds. Goal: ≤ 100 ms.
 *
 * TCP part: guest-to-guest TCP throughput across hosts. Two nodes; on the
 * overlay network a receiver guest on n2 (busybox `nc -l` to /dev/null, its
 * NIC in a security group that admits the port) and, per sample, a sender
 * guest on n1 (`nc RECEIVER PORT </dev/zero`), both created through novactl.
 * Anchor: the same two guests with the same user-data, launched by hand in the
 * same namespaces on logical ports and taps wired by hand (no ACLs). One pair
 * streams at a time, alternating; each sample is the bytes the receiver's tap
 * handed its guest over `--window` seconds once the stream runs (Ethernet
 * frames, read from the tap's tx counter on the host). Goal: ≥ 0.9× the anchor.
 *
 *   deno task bench:net [--case sg|migration|dhcp|tcp|all] [--changes 50] [--voters 3]
 *     [--migrations 10] [--samples 10] [--window 5] [--stop-and-copy auto|always|never]
 *
 * Writes bench/results/net.json (`NetBenchResult`); a run of some cases keeps the other cases'
 * sections from the file as they were.
 */
import { type Figure, figure } from "./lib/figures.ts";
import { type RunMeta, runMeta } from "./lib/run_meta.ts";
import { percentile } from "./lib/stats.ts";
import { guestImportArgs, scriptUserData, testGuest } from "./lib/guest.ts";
import { launchBare, quitBare } from "./lib/bare_qemu.ts";
import {
  addBarePort,
  type BarePort,
  createBareSwitch,
  removeBarePort,
  tapBytes,
} from "./lib/bare_ovn.ts";
import { DhcpWatch, epochNowMs } from "./lib/dhcp_watch.ts";
import {
  modifiedAtMs,
  pairDiffs,
  type Span,
  SPANS,
  spansOf,
  spanValues,
  type StartMarks,
  vcpuStart,
} from "./lib/start_marks.ts";
import { DirPool } from "../host/storage/mod.ts";
import {
  buildSeedIso,
  GuestAgent,
  type LaunchSpec,
  QemuDriver,
  type QmpClient,
} from "../host/kvm/mod.ts";
import { renderSeed } from "../core/cloudinit/mod.ts";
import { type NetCluster, startNetCluster } from "./lib/net_cluster.ts";
import {
  kernelTrouble,
  migrateUnderPing,
  pingerUserData,
  pingsInPause,
} from "./lib/net_migration.ts";
import { formatQemuVersion, qemuBinaryVersion } from "../host/kvm/qemu_version.ts";
import { sleep } from "./lib/util.ts";

/** What bench/results/net.json holds. */
export interface NetBenchResult {
  meta: RunMeta;
  setup?: {
    hosts: number;
    voters: number;
    ports: number;
    groups: number;
    rules: number;
    changes: number;
  };
  securityGroups?: {
    /** Rule POST → its flows in br-int on every host. */
    ruleToEnforcedAllHostsMs: Figure & { p50: number; p99: number };
    /** Rule POST → the API's answer (committed in the replicated state). */
    ruleApiMs: Figure;
    /** The anchor: `ovn-nbctl acl-add` → its flows on every host. */
    bareOvnAclToEnforcedMs: Figure & { p50: number; p99: number };
    goalP50Ms: number;
  };
  migration?: {
    /** Its own run's provenance (a `--case migration` run keeps the other case's meta). */
    meta: RunMeta;
    setup: { hosts: number; pingIntervalMs: number; guestMemoryMiB: number; migrations: number };
    /** Pings (100 ms apart) that got no reply, per live migration. */
    lostPackets: Figure;
    /**
     * Per migration, the pings lost beyond those the guest's own pause swallowed
     * (`pingsInPause`): the network's share, which the CPU's speed does not set.
     */
    lostBeyondPause: Figure;
    /** The longest outage per migration, in pings. */
    longestOutagePings: Figure;
    /** Migration operation time (the source's view: setup, memory, switchover). */
    migrationMs: Figure;
    /** Guest paused (source stopped → destination resumed). */
    guestPausedMs: Figure;
    /** Migrations that lost at most goalLost pings. */
    withinGoal: number;
    goalLost: number;
    /**
     * The migration after which the pings never resumed (the run stops there: the guest is
     * gone for the ones after it), with the end of the target guest's console.
     */
    stalled?: { migration: number; to: string; guestConsoleTail: string };
    /** The QEMU on PATH (`qemu-system-x86_64 --version`), which the nodes ran. */
    qemu?: string;
    /** `migration.stopAndCopy` as set for the run; absent: the cluster's default (`auto`). */
    stopAndCopy?: string;
    /**
     * Kernel trouble (lockups, oopses, stalls) on either guest's console, checked after every
     * migration ({@link kernelTrouble}); empty when there was none.
     */
    guestKernelTrouble?: string[];
    /** How many of those console reads got text (two per check: an empty one proves nothing). */
    consolesRead?: number;
  };
  dhcp?: {
    meta: RunMeta;
    setup: { hosts: number; guestMemoryMiB: number; samples: number; order: string };
    /** `POST /api/v1/vms` → OVN's DHCPACK on the guest's tap. */
    novactlMs: Figure & { p50: number; p99: number };
    /** Port, tap and QEMU by hand → the same DHCPACK. */
    bareMs: Figure & { p50: number; p99: number };
    /** novactl minus bare within each pair. */
    overheadMs: Figure & { p50: number; p99: number };
    /** The guest's first DHCPDISCOVER → the DHCPACK: OVN's DHCP exchange alone, each side. */
    novactlDiscoverToAckMs: Figure;
    bareDiscoverToAckMs: Figure;
    /**
     * Each side's spans between points both share (bench/lib/start_marks.ts): start → QEMU up
     * (QMP socket made), → the guest's vCPU first runs, → its first DHCPDISCOVER, → DHCPACK.
     */
    novactlSpansMs?: Record<Span, Figure>;
    bareSpansMs?: Record<Span, Figure>;
    /** Per pair, novactl's span minus the anchor's; they add up to `overheadMs` pair by pair. */
    spanOverheadMs?: Record<Span, Figure>;
    /**
     * Per pair, the overhead without the guest's own boot (vCPU first runs → first
     * DHCPDISCOVER, the same kernel and initramfs on the same virtual hardware on both sides):
     * what novactl's control plane, its QEMU launch and OVN's answer add.
     */
    managerOverheadMs?: Figure;
    /** The devices the anchor's guest was given, as novactl's launch spec had them. */
    anchorDevices?: Record<string, unknown>;
    /**
     * A third side, in turn with the two: the anchor with its guest on the driver's plain
     * device set (serial to a file, no VNC or display, no disk hot-plug ports), as an
     * operator might launch it by hand. Its spans, novactl's total minus its total per sample,
     * and, per sample, the anchor's boot span less this one's: what novactl's devices cost
     * the guest's boot.
     */
    plainSpansMs?: Record<Span, Figure>;
    plainOverheadMs?: Figure & { p50: number; p99: number };
    devicesBootMs?: Figure;
    goalOverheadMs: number;
  };
  tcp?: {
    meta: RunMeta;
    setup: {
      hosts: number;
      guestMemoryMiB: number;
      samples: number;
      windowS: number;
      tool: string;
      order: string;
    };
    /** Guests created through novactl on its overlay network. */
    novactlMbitPerS: Figure;
    /** The same guests launched by hand on logical ports wired by hand, no ACLs. */
    bareMbitPerS: Figure;
    /** The same, the ports in a port group with novactl's pair's ACLs (so through conntrack). */
    bareAclMbitPerS?: Figure;
    /** novactl / bare within each pair. */
    ratio: Figure;
    /** novactl / bare with ACLs within each sample. */
    ratioToBareAcl?: Figure;
    /** novactl's median over the anchor's median. */
    ratioOfMedians: number;
    goalRatio: number;
  };
}

function flag(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && Deno.args[i + 1] ? Deno.args[i + 1] : def;
}

const HOSTS = 3;
const VOTERS = Number(flag("voters", "3"));
const PORTS = 100;
const GROUPS = 10;
const RULES = 1_000;
const CHANGES = Number(flag("changes", "50"));
const CASE = flag("case", "all");
const MIGRATIONS = Number(flag("migrations", "10"));
/** `migration.stopAndCopy` for the migration case; the cluster's default when absent. */
const STOP_AND_COPY = flag("stop-and-copy", "");
const GOAL_LOST = 2;
const SAMPLES = Number(flag("samples", "10"));
const WINDOW_S = Number(flag("window", "5"));
const GOAL_OVERHEAD_MS = 100;
const GOAL_RATIO = 0.9;
const GUEST_MIB = 128;
const OUT = flag("out", new URL("./results/net.json", import.meta.url).pathname);
const GOAL_P50_MS = 300;
const POLL_MS = 10;
const SUBNET = "10.93.0";
const hostOf = (i: number) => `n${(i % HOSTS) + 1}`;

/** Runs `ovn-nbctl` against the cluster's northbound database (n1 runs central). */
function nbctl(net: NetCluster, args: string[]): Promise<string> {
  const sock = `${net.cluster.node("n1").dataDir}/ovn/run/ovnnb_db.sock`;
  return run("ovn-nbctl", [`--db=unix:${sock}`, ...args]);
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Milliseconds from `t0` until every host's br-int has a flow for tcp port `port`. */
async function enforcedEverywhere(net: NetCluster, port: number, t0: number): Promise<number> {
  const deadline = performance.now() + 30_000;
  const hosts = net.cluster.nodes.map((n) => n.name);
  const seen = await Promise.all(hosts.map(async (h) => {
    while (performance.now() < deadline) {
      const flows = await net.sh(h, ["ovs-ofctl", "dump-flows", "br-int", `tcp,tp_dst=${port}`]);
      if (flows.includes(`tp_dst=${port}`)) return performance.now();
      await sleep(POLL_MS);
    }
    throw new Error(`tcp port ${port}: no flow on ${h} after 30 s`);
  }));
  return Math.max(...seen) - t0;
}

async function post(
  net: NetCluster,
  path: string,
  body: unknown,
): Promise<Record<string, unknown>> {
  const r = await net.api(path, { method: "POST", body });
  if (r.status >= 300) throw new Error(`POST ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** p50 and p99 (nearest rank) beside the figure: 50 samples are too few for figure()'s p99. */
function withPercentiles(values: number[]): Figure & { p50: number; p99: number } {
  const sorted = Float64Array.from(values).sort();
  const round = (v: number) => Math.round(v * 10) / 10;
  return {
    ...figure(values, 1),
    p50: round(percentile(sorted, 50)),
    p99: round(percentile(sorted, 99)),
  };
}

/** The security-group case on its own 3-host cluster. */
async function securityGroupCase(): Promise<
  Pick<NetBenchResult, "meta" | "setup" | "securityGroups">
> {
  const net = await startNetCluster({ prefix: "novactl-netbench-", hosts: HOSTS, voters: VOTERS });
  try {
    const meta0 = await runMeta("net", { dataDir: "/dev/shm", runs: CHANGES });
    await net.ok(...guestImportArgs(await testGuest(), "guest"));
    // The VMs never run: let the scheduler place 34 of them on a 2-core host.
    for (const kind of ["cpu", "memory", "disk"]) {
      await net.ok("config", "set", `scheduler.overcommit.${kind}`, kind === "memory" ? "8" : "64");
    }
    await post(net, "/api/v1/networks", {
      name: "bench",
      type: "overlay",
      subnet: `${SUBNET}.0/24`,
    });

    const t0 = performance.now();
    for (let g = 0; g < GROUPS; g++) await post(net, "/api/v1/security-groups", { name: `sg${g}` });
    for (let g = 0; g < GROUPS; g++) {
      for (let r = 0; r < RULES / GROUPS; r++) {
        // Distinct rules: a port per rule, and a remote of the group's own /24 or a peer group.
        await post(net, `/api/v1/security-groups/sg${g}/rules`, {
          direction: "ingress",
          protocol: r % 2 ? "tcp" : "udp",
          port: 10_000 + g * 100 + r,
          ...(r % 3 === 0
            ? { remoteGroup: `sg${(g + 1) % GROUPS}` }
            : { remote: `10.${g}.${r}.0/24` }),
        });
      }
    }
    console.log(`${GROUPS} groups, ${RULES} rules in ${Math.round(performance.now() - t0)} ms`);

    const t1 = performance.now();
    for (let i = 0; i < PORTS; i++) {
      await post(net, "/api/v1/vms", {
        name: `p${i}`,
        image: "guest",
        memoryMiB: 64,
        start: false,
        node: hostOf(i),
        nics: [{ network: "bench", securityGroups: [`sg${i % GROUPS}`] }],
      });
    }
    console.log(`${PORTS} VMs with NICs in ${Math.round(performance.now() - t1)} ms`);

    // Bind each NIC's logical port on its host, as the host's tap would be.
    for (let i = 0; i < PORTS; i++) {
      const iface = `nb${i}`;
      await net.sh(hostOf(i), [
        "ovs-vsctl",
        "--may-exist",
        "add-port",
        "br-int",
        iface,
        "--",
        "set",
        "interface",
        iface,
        "type=internal",
        `external_ids:iface-id=nv-p${i}-0`,
      ]);
    }
    const deadline = Date.now() + 120_000;
    for (;;) {
      const up = (await nbctl(net, ["--bare", "--columns=up", "list", "Logical_Switch_Port"]))
        .split("\n").filter((l) => l.trim() === "true").length;
      if (up >= PORTS) break;
      if (Date.now() > deadline) throw new Error(`only ${up} of ${PORTS} ports up after 120 s`);
      await sleep(500);
    }
    const acls = (await nbctl(net, ["--bare", "--columns=_uuid", "list", "ACL"])).split("\n")
      .filter(Boolean).length;
    console.log(
      `${PORTS} ports up ${Math.round(performance.now() - t1)} ms after the first VM; ${acls} ACLs`,
    );
    // The anchor's own port group: the same ports, not novactl's (the reconciler leaves it alone).
    await nbctl(net, [
      "pg-add",
      "bench_anchor",
      ...Array.from({ length: PORTS }, (_, i) => `nv-p${i}-0`),
    ]);
    await sleep(2_000);

    const samples: number[] = [];
    const apiMs: number[] = [];
    const anchors: number[] = [];
    for (let i = 0; i < CHANGES; i++) {
      const g = i % GROUPS;
      const port = 20_000 + i;
      const s0 = performance.now();
      await post(net, `/api/v1/security-groups/sg${g}/rules`, {
        direction: "ingress",
        protocol: "tcp",
        port,
      });
      apiMs.push(performance.now() - s0);
      samples.push(await enforcedEverywhere(net, port, s0));

      const anchorPort = 30_000 + i;
      const a0 = performance.now();
      await nbctl(net, [
        "--type=port-group",
        "acl-add",
        "bench_anchor",
        "to-lport",
        "1002",
        `outport == @bench_anchor && ip4 && tcp && tcp.dst == ${anchorPort}`,
        "allow-related",
      ]);
      anchors.push(await enforcedEverywhere(net, anchorPort, a0));
      console.log(
        `change ${i + 1}: api ${Math.round(apiMs[i])} ms, enforced on ${HOSTS} hosts ${
          Math.round(samples[i])
        } ms; bare OVN ${Math.round(anchors[i])} ms`,
      );
      await sleep(200);
    }
    const result = {
      meta: { ...meta0, date: new Date().toISOString() },
      setup: {
        hosts: HOSTS,
        voters: VOTERS,
        ports: PORTS,
        groups: GROUPS,
        rules: RULES,
        changes: CHANGES,
      },
      securityGroups: {
        ruleToEnforcedAllHostsMs: withPercentiles(samples),
        ruleApiMs: figure(apiMs, 1),
        bareOvnAclToEnforcedMs: withPercentiles(anchors),
        goalP50Ms: GOAL_P50_MS,
      },
    };
    console.log(JSON.stringify(result.securityGroups, null, 2));
    return result;
  } finally {
    await net.stop();
  }
}

/** The migration case on its own 2-host cluster: packets lost per live migration. */
async function migrationCase(): Promise<NonNullable<NetBenchResult["migration"]>> {
  const subnet = "10.94.0";
  const memoryMiB = 128;
  const [a, b] = [`${subnet}.10`, `${subnet}.11`];
  const net = await startNetCluster({ prefix: "novactl-netbench-mig-", hosts: 2, voters: 1 });
  try {
    const meta = await runMeta("net", { dataDir: "/dev/shm", runs: MIGRATIONS });
    await net.ok(...guestImportArgs(await testGuest(), "guest"));
    if (STOP_AND_COPY) await net.ok("config", "set", "migration.stopAndCopy", STOP_AND_COPY);
    await post(net, "/api/v1/networks", { name: "mig", type: "overlay", subnet: `${subnet}.0/24` });
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/pa.yaml`, pingerUserData(b));
      const create = (name: string, ip: string, extra: string[] = []) =>
        net.ok(
          ...["vm", "create", name, "--image", "guest", "--memory", `${memoryMiB}M`],
          ...["--node", "n1", "--nic", `mig,ip=${ip}`, "--wait", ...extra],
        );
      await create("pb", b);
      await create("pa", a, ["--user-data", `${dir}/pa.yaml`]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    const lost: number[] = [];
    const gaps: number[] = [];
    const totalMs: number[] = [];
    const pausedMs: number[] = [];
    const beyond: number[] = [];
    let stalled: { migration: number; to: string; guestConsoleTail: string } | undefined;
    // Each incarnation of pb has its own console on its host: read after every migration.
    const trouble = new Set<string>();
    let consolesRead = 0;
    const checkConsoles = async () => {
      for (const vm of ["pa", "pb"]) {
        const text = await net.consoleOf(vm, 65536).catch(() => "");
        if (text) consolesRead++;
        for (const line of kernelTrouble(text)) trouble.add(`${vm}: ${line}`);
      }
    };
    for (let i = 0; i < MIGRATIONS; i++) {
      const to = i % 2 ? "n1" : "n2";
      let r: Awaited<ReturnType<typeof migrateUnderPing>>;
      try {
        r = await migrateUnderPing(net, {
          pinger: "pa",
          target: "pb",
          peerIp: b,
          to,
          port: "nv-pb-0",
        });
      } catch (err) {
        const tail = (await net.consoleOf("pb", 4096).catch(() => "")).split("\n").slice(-6).join(
          "\n",
        );
        stalled = { migration: i + 1, to, guestConsoleTail: tail };
        console.log(`migration ${i + 1} → ${to}: ${err}; the target's console ends:\n${tail}`);
        break;
      }
      lost.push(r.lost);
      gaps.push(r.longestGap);
      totalMs.push(Number(r.result.totalMs));
      pausedMs.push(Number(r.result.guestPausedMs));
      beyond.push(Math.max(0, r.lost - pingsInPause(Number(r.result.guestPausedMs))));
      console.log(
        `migration ${i + 1} → ${to}: ${r.lost} pings lost (longest outage ${r.longestGap}), ` +
          `${r.result.totalMs} ms, guest paused ${r.result.guestPausedMs} ms ` +
          `(QEMU downtime ${r.result.qemuDowntimeMs} ms; after the stop: ` +
          `${JSON.stringify(r.result.switchover)})`,
      );
      const before = trouble.size;
      await checkConsoles();
      if (trouble.size > before) console.log(`kernel trouble on a guest's console:`, [...trouble]);
    }
    await checkConsoles();
    return {
      meta: { ...meta, date: new Date().toISOString() },
      setup: { hosts: 2, pingIntervalMs: 100, guestMemoryMiB: memoryMiB, migrations: MIGRATIONS },
      lostPackets: figure(lost, 1),
      lostBeyondPause: figure(beyond, 1),
      longestOutagePings: figure(gaps, 1),
      migrationMs: figure(totalMs, 1),
      guestPausedMs: figure(pausedMs, 1),
      withinGoal: lost.filter((n) => n <= GOAL_LOST).length,
      goalLost: GOAL_LOST,
      ...(stalled ? { stalled } : {}),
      qemu: formatQemuVersion(await qemuBinaryVersion()),
      ...(STOP_AND_COPY ? { stopAndCopy: STOP_AND_COPY } : {}),
      guestKernelTrouble: [...trouble],
      consolesRead,
    };
  } finally {
    await net.stop();
  }
}

/** Waits until the VM is gone from the cluster (its host stopped it and unplugged its tap). */
async function deleteVm(net: NetCluster, name: string): Promise<void> {
  await net.api(`/api/v1/vms/${name}?force=true`, { method: "DELETE" });
  const deadline = Date.now() + 60_000;
  while ((await net.api(`/api/v1/vms/${name}`)).status !== 404) {
    if (Date.now() > deadline) throw new Error(`${name} still there 60 s after its delete`);
    await sleep(50);
  }
}

/** The MAC of NIC 0 of a VM, from its record. */
async function macOf(net: NetCluster, vm: string): Promise<string> {
  const r = await net.api<{ nics?: { mac: string }[] }>(`/api/v1/vms/${vm}`);
  const mac = r.body.nics?.[0]?.mac;
  if (!mac) throw new Error(`${vm} has no NIC: ${JSON.stringify(r.body)}`);
  return mac;
}

/** Creates an overlay network through novactl and returns its OVN DHCP options' subnet. */
async function overlay(net: NetCluster, name: string, cidr: string): Promise<void> {
  await post(net, "/api/v1/networks", { name, type: "overlay", subnet: cidr });
  // The leader's northbound pass writes its switch and DHCP options.
  const deadline = Date.now() + 30_000;
  while (!(await net.nbctl("--bare", "--columns=_uuid", "find", "DHCP_Options", `cidr=${cidr}`))) {
    if (Date.now() > deadline) throw new Error(`no DHCP options for ${cidr} after 30 s`);
    await sleep(100);
  }
}

/** The DHCP case: VM create with a NIC → lease, against a port, tap and QEMU by hand. */
async function dhcpCase(): Promise<NonNullable<NetBenchResult["dhcp"]>> {
  const net = await startNetCluster({ prefix: "novactl-netbench-dhcp-", hosts: 2, voters: 1 });
  const work = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-netbench-bare-" });
  const host = "n2";
  let watch: DhcpWatch | null = null;
  try {
    const meta = await runMeta("net", { dataDir: "/dev/shm", runs: SAMPLES });
    await net.ok(...guestImportArgs(await testGuest(), "guest"));
    await overlay(net, "dhcp", "10.95.0.0/24");
    const sw = await createBareSwitch(net, "bare_dhcp", "10.95.1.0/24", "10.95.0.0/24");
    const pool = await new DirPool(`${work}/pool`).init();
    watch = await DhcpWatch.start(net.cluster.node(host).namespace!);
    const w = watch;

    const nodeVms = `${net.cluster.node(host).dataDir}/vms`;
    /**
     * One start's marks (bench/lib/start_marks.ts): the guest's vCPU thread is polled from
     * before `go` runs; QEMU's QMP socket is read once the guest got its lease, while the QEMU
     * still runs.
     */
    const marks = async (
      vmDir: string,
      mac: () => Promise<string>,
      go: () => Promise<void>,
    ): Promise<StartMarks> => {
      const vcpu = vcpuStart(`${vmDir}/qemu.pid`);
      try {
        const start = epochNowMs();
        await go();
        const m = await mac();
        const ack = await w.waitFor(m, start);
        return {
          start,
          qemuUp: await modifiedAtMs(`${vmDir}/qmp.sock`),
          running: await vcpu.at,
          discover: await w.waitFor(m, start, "DISCOVER"),
          ack,
        };
      } finally {
        vcpu.stop();
      }
    };
    // The anchor's guest gets the devices novactl's has (serial socket and VNC, display, PCIe
    // ports), read from novactl's launch spec: both boot the same virtual hardware.
    let devices: Pick<LaunchSpec, "consoles" | "display" | "diskPorts"> | undefined;
    const novactl = async (name: string) => {
      try {
        return await marks(`${nodeVms}/${name}`, () => macOf(net, name), async () => {
          await post(net, "/api/v1/vms", {
            name,
            image: "guest",
            memoryMiB: GUEST_MIB,
            node: host,
            nics: [{ network: "dhcp" }],
          });
        });
      } finally {
        if (!devices) {
          const spec = JSON.parse(await Deno.readTextFile(`${nodeVms}/${name}/launch.json`));
          devices = { consoles: spec.consoles, display: spec.display, diskPorts: spec.diskPorts };
        }
        await deleteVm(net, name);
      }
    };
    /** The anchor; `plain`: its guest without novactl's devices (a serial file, no display). */
    const bare = async (i: number, plain = false) => {
      const name = `bare-d${i}${plain ? "p" : ""}`;
      const hex = (i & 0xff).toString(16).padStart(2, "0");
      const p: BarePort = {
        node: host,
        port: `bare-dhcp-${i}${plain ? "p" : ""}`,
        tap: `nvbd${i}${plain ? "p" : ""}`,
        mac: `52:54:00:95:${plain ? "02" : "01"}:${hex}`,
        ip: `10.95.1.${10 + (i % 120) + (plain ? 120 : 0)}`,
      };
      let qmp: QmpClient | null = null;
      try {
        return await marks(`${work}/vms/${name}`, () => Promise.resolve(p.mac), async () => {
          // Inside the clock, as novactl makes its VM's disk inside its own: a fresh 1 GiB
          // qcow2 (novactl's root disk for a kernel image is a blank one of the same kind).
          const disk = (await pool.create(name, 2 ** 30)).path;
          await addBarePort(net, sw, p);
          qmp = await launchBare(`${work}/vms`, {
            name,
            memoryMiB: GUEST_MIB,
            disk,
            nics: [{ id: "net0", mac: p.mac, tap: p.tap, port: 0 }],
            netns: net.cluster.node(host).namespace!,
            devices: plain ? {} : devices,
          });
        });
      } finally {
        if (qmp) await quitBare(qmp);
        await removeBarePort(net, p);
        await pool.delete(name).catch(() => {});
      }
    };

    // Warm up once each (the image's first pull into the host's store, the accelerator probe).
    const ms = (m: StartMarks) => Math.round(m.ack - m.start);
    console.log(`warm-up: novactl ${ms(await novactl("dwarm"))} ms`);
    console.log(`warm-up: bare ${ms(await bare(999))} ms`);
    const n: StartMarks[] = [];
    const b: StartMarks[] = [];
    const bp: StartMarks[] = [];
    const line = (m: StartMarks) =>
      `${ms(m)} ms (${Object.values(spansOf(m)).map((v) => Math.round(v)).join(" + ")})`;
    for (let i = 0; i < SAMPLES; i++) {
      n.push(await novactl(`d${i}`));
      b.push(await bare(i));
      bp.push(await bare(i, true));
      console.log(
        `dhcp ${i + 1}: novactl ${line(n[i])}, bare ${line(b[i])}, plain bare ${line(bp[i])}, ` +
          `overhead ${ms(n[i]) - ms(b[i])} ms`,
      );
    }
    const pv = spanValues(bp);
    const plainDiff = pairDiffs(n, bp);
    const nv = spanValues(n);
    const bv = spanValues(b);
    const diff = pairDiffs(n, b);
    const spanFigures = (v: Record<Span, number[]>) =>
      Object.fromEntries(SPANS.map((k) => [k, figure(v[k], 1)])) as Record<Span, Figure>;
    return {
      meta: { ...meta, date: new Date().toISOString() },
      setup: {
        hosts: 2,
        guestMemoryMiB: GUEST_MIB,
        samples: SAMPLES,
        order: "novactl, bare, plain bare, in turn",
      },
      novactlMs: withPercentiles(nv.total),
      bareMs: withPercentiles(bv.total),
      overheadMs: withPercentiles(diff.total),
      novactlDiscoverToAckMs: figure(nv.dhcp, 1),
      bareDiscoverToAckMs: figure(bv.dhcp, 1),
      novactlSpansMs: spanFigures(nv),
      bareSpansMs: spanFigures(bv),
      spanOverheadMs: spanFigures(diff),
      managerOverheadMs: figure(n.map((_, i) => diff.total[i] - diff.boot[i]), 1),
      anchorDevices: devices ?? {},
      plainSpansMs: spanFigures(pv),
      plainOverheadMs: withPercentiles(plainDiff.total),
      devicesBootMs: figure(b.map((_, i) => bv.boot[i] - pv.boot[i]), 1),
      goalOverheadMs: GOAL_OVERHEAD_MS,
    };
  } finally {
    await watch?.stop();
    await net.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

const TCP_PORT = 5001;
/**
 * The test guest's udhcpc hook leaves DHCP's MTU option unapplied, so the guest would send
 * 1,500-byte frames that the overlay's encapsulation cannot carry (full-size TCP segments are
 * lost; pings pass): each script sets the network's MTU first, on both sides alike.
 */
const setMtu = (mtu: number) => `ip link set dev eth0 mtu ${mtu}`;
/**
 * The receiver: accepts stream after stream and throws the bytes away. busybox nc half-closes
 * the connection when its stdin ends, and the sender's nc quits on that FIN: its stdin is a
 * FIFO this shell holds open, so it never ends.
 */
const receiverScript = (mtu: number) =>
  [
    setMtu(mtu),
    "mkfifo /run/hold",
    "exec 3<>/run/hold",
    `while :; do nc -l -p ${TCP_PORT} <&3 >/dev/null; done`,
    "",
  ].join("\n");
/** Seconds a sender streams: the window, and slack for the host to see the stream start. */
const streamSeconds = () => WINDOW_S + 5;
/**
 * The sender: once it holds its lease, streams zeros to `peer` for `streamSeconds()` and
 * closes the connection (so the receiver listens again for the next sender).
 */
const senderScript = (peer: string, mtu: number) =>
  [
    setMtu(mtu),
    "until ip -4 addr show dev eth0 | grep -q inet; do sleep 0.2; done",
    `timeout ${streamSeconds()} nc ${peer} ${TCP_PORT} </dev/zero`,
    "",
  ].join("\n");

/**
 * Mbit/s through `tap` (its tx: what it handed the guest behind it) over `WINDOW_S` seconds,
 * once the stream runs (100 kB within half a second, then 1 s more); then waits for the
 * stream to end.
 */
async function streamRate(net: NetCluster, node: string, tap: string): Promise<number> {
  const bytes = () => tapBytes(net, node, tap, "tx");
  const deadline = performance.now() + 120_000;
  for (let last = await bytes();;) {
    await sleep(500);
    const now = await bytes();
    if (now - last > 100_000) break;
    last = now;
    if (performance.now() > deadline) {
      const rx = await tapBytes(net, node, tap, "rx");
      throw new Error(`no stream into ${tap} after 120 s (tx ${now} bytes, rx ${rx} bytes)`);
    }
  }
  await sleep(1_000);
  const read = async () => {
    const t = performance.now();
    const n = await bytes();
    return { n, at: (t + performance.now()) / 2 };
  };
  const a = await read();
  await sleep(WINDOW_S * 1_000);
  const z = await read();
  const end = performance.now() + 30_000;
  for (let last = z.n; performance.now() < end;) {
    await sleep(500);
    const now = await bytes();
    if (now - last < 10_000) break;
    last = now;
  }
  return ((z.n - a.n) * 8) / ((z.at - a.at) / 1_000) / 1e6;
}

/** The tap `ovs-vsctl` names for logical port `port` on `node`. */
async function tapOf(net: NetCluster, node: string, port: string): Promise<string> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const name = (await net.sh(node, [
      ...["ovs-vsctl", "--bare", "--columns=name", "find", "interface"],
      `external_ids:iface-id=${port}`,
    ])).trim();
    if (name) return name;
    if (Date.now() > deadline) throw new Error(`no tap for ${port} on ${node} after 60 s`);
    await sleep(100);
  }
}

/** The TCP case: guest-to-guest throughput across hosts, novactl against OVN wired by hand. */
async function tcpCase(): Promise<NonNullable<NetBenchResult["tcp"]>> {
  const net = await startNetCluster({ prefix: "novactl-netbench-tcp-", hosts: 2, voters: 1 });
  const work = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-netbench-bare-" });
  const bareQmps: Awaited<ReturnType<typeof launchBare>>[] = [];
  try {
    const meta = await runMeta("net", { dataDir: "/dev/shm", runs: SAMPLES });
    await net.ok(...guestImportArgs(await testGuest(), "guest"));
    await overlay(net, "tcp", "10.96.0.0/24");
    const mtu = (await net.api<{ mtu: number }>("/api/v1/networks/tcp")).body.mtu;
    await post(net, "/api/v1/security-groups", { name: "stream" });
    await post(net, "/api/v1/security-groups/stream/rules", {
      direction: "ingress",
      protocol: "tcp",
      port: TCP_PORT,
    });
    const sw = await createBareSwitch(net, "bare_tcp", "10.96.1.0/24", "10.96.0.0/24");
    const pool = await new DirPool(`${work}/pool`).init();
    const nsOf = (node: string) => net.cluster.node(node).namespace!;
    const seed = async (name: string, userData: string) => {
      const iso = `${work}/${name}-seed.iso`;
      await buildSeedIso(iso, renderSeed({ name, uuid: crypto.randomUUID() }, { userData }));
      return iso;
    };

    // The receivers, for the whole run: novactl's on n2 ...
    const novactlPeer = "10.96.0.20";
    await post(net, "/api/v1/vms", {
      name: "recv",
      image: "guest",
      memoryMiB: GUEST_MIB,
      node: "n2",
      nics: [{ network: "tcp", ip: novactlPeer, securityGroups: ["stream"] }],
      cloudInit: { userData: scriptUserData(receiverScript(mtu)) },
    });
    const novactlTap = await tapOf(net, "n2", "nv-recv-0");
    // ... and the anchor's, by hand on n2.
    const recv: BarePort = {
      node: "n2",
      port: "bare-recv",
      tap: "nvbrecv",
      mac: "52:54:00:96:01:14",
      ip: "10.96.1.20",
    };
    await addBarePort(net, sw, recv);
    bareQmps.push(
      await launchBare(`${work}/vms`, {
        name: "bare-recv",
        memoryMiB: GUEST_MIB,
        disk: (await pool.create("bare-recv", 2 ** 30)).path,
        nics: [{ id: "net0", mac: recv.mac, tap: recv.tap, port: 0 }],
        seed: await seed("bare-recv", scriptUserData(receiverScript(mtu))),
        netns: nsOf("n2"),
      }),
    );
    const send: BarePort = {
      node: "n1",
      port: "bare-send",
      tap: "nvbsend",
      mac: "52:54:00:96:01:0a",
      ip: "10.96.1.10",
    };
    await addBarePort(net, sw, send);
    const sendSeed = await seed("bare-send", scriptUserData(senderScript(recv.ip, mtu)));

    const novactl = async (i: number) => {
      const name = `send${i}`;
      await post(net, "/api/v1/vms", {
        name,
        image: "guest",
        memoryMiB: GUEST_MIB,
        node: "n1",
        // The same address and MAC every sample, as the anchor's sender has: a new MAC on a
        // reused address would meet the receiver's stale ARP entry (the test guest sends no
        // gratuitous ARP), and its ACKs would go to the old MAC for seconds.
        nics: [{ network: "tcp", ip: "10.96.0.10", mac: "52:54:00:96:00:0a" }],
        cloudInit: { userData: scriptUserData(senderScript(novactlPeer, mtu)) },
      });
      try {
        return await streamRate(net, "n2", novactlTap);
      } catch (err) {
        await net.diagnose(["recv", name]);
        throw err;
      } finally {
        await deleteVm(net, name);
      }
    };
    /**
     * The anchor's ports in a port group with the ACLs novactl gives its pair: ingress dropped
     * by default, the stream's port admitted statefully (OVN then sends the switch's traffic
     * through conntrack, as it does novactl's).
     */
    const bareAcls = async (on: boolean) => {
      if (!on) return void await net.nbctl("pg-del", "bare_acl");
      await net.nbctl("pg-add", "bare_acl", recv.port, send.port);
      const acl = (prio: string, match: string, action: string) =>
        net.nbctl("--type=port-group", "acl-add", "bare_acl", "to-lport", prio, match, action);
      await acl("1001", "outport == @bare_acl && ip", "drop");
      await acl(
        "1002",
        `outport == @bare_acl && ip4 && tcp && tcp.dst == ${TCP_PORT}`,
        "allow-related",
      );
    };
    const bare = async (i: number, acls = false) => {
      const name = `bare-send${i}${acls ? "-acl" : ""}`;
      if (acls) {
        await bareAcls(true);
        await sleep(2_000); // their flows on both hosts (bench:net sg: well under a second)
      }
      const qmp = await launchBare(`${work}/vms`, {
        name,
        memoryMiB: GUEST_MIB,
        disk: (await pool.create(name, 2 ** 30)).path,
        nics: [{ id: "net0", mac: send.mac, tap: send.tap, port: 0 }],
        seed: sendSeed,
        netns: nsOf("n1"),
      });
      try {
        return await streamRate(net, "n2", recv.tap);
      } catch (err) {
        for (const vm of ["bare-recv", name]) {
          const agent = new GuestAgent(new QemuDriver(`${work}/vms`).paths(vm).qga);
          const r = await agent.run("/bin/sh", [
            "-c",
            "ip link show eth0; ip -4 addr show eth0; netstat -tn; grep -A1 '^Tcp:' /proc/net/snmp",
          ]).catch((e) => ({ stdout: String(e), stderr: "" }));
          console.error(`--- ${vm}\n${r.stdout}${r.stderr}`);
          await agent.close();
        }
        throw err;
      } finally {
        await quitBare(qmp);
        await pool.delete(name).catch(() => {});
        if (acls) await bareAcls(false);
      }
    };

    const n: number[] = [];
    const b: number[] = [];
    const ba: number[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      n.push(await novactl(i));
      b.push(await bare(i));
      ba.push(await bare(i, true));
      console.log(
        `tcp ${i + 1}: novactl ${n[i].toFixed(1)} Mbit/s, bare ${b[i].toFixed(1)} Mbit/s, ` +
          `bare with ACLs ${ba[i].toFixed(1)} Mbit/s, ratio ${(n[i] / b[i]).toFixed(2)}`,
      );
    }
    const novactlMbitPerS = figure(n, 1);
    const bareMbitPerS = figure(b, 1);
    const bareAclMbitPerS = figure(ba, 1);
    return {
      meta: { ...meta, date: new Date().toISOString() },
      setup: {
        hosts: 2,
        guestMemoryMiB: GUEST_MIB,
        samples: SAMPLES,
        windowS: WINDOW_S,
        tool: "busybox `nc </dev/zero` → `nc -l >/dev/null`; bytes from the receiver's tap counter",
        order: "novactl, bare, bare with ACLs, in turn",
      },
      novactlMbitPerS,
      bareMbitPerS,
      bareAclMbitPerS,
      ratio: figure(n.map((v, i) => v / b[i]), 3),
      ratioOfMedians: Math.round((novactlMbitPerS.median / bareMbitPerS.median) * 1000) / 1000,
      ratioToBareAcl: figure(n.map((v, i) => v / ba[i]), 3),
      goalRatio: GOAL_RATIO,
    };
  } finally {
    for (const qmp of bareQmps) await quitBare(qmp);
    await net.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

const CASES = ["sg", "migration", "dhcp", "tcp"];
if (CASE !== "all" && !CASES.includes(CASE)) {
  console.error(`--case: ${CASES.join(", ")} or all, not "${CASE}"`);
  Deno.exit(2);
}
const wants = (c: string) => CASE === "all" || CASE === c;
// A run of some cases keeps what the file says of the others.
const previous: Partial<NetBenchResult> = await Deno.readTextFile(OUT).then(
  (t) => JSON.parse(t),
  () => ({}),
);
const sg = wants("sg") ? await securityGroupCase() : null;
const migration = wants("migration") ? await migrationCase() : previous.migration;
if (wants("migration")) console.log(JSON.stringify(migration, null, 2));
const dhcp = wants("dhcp") ? await dhcpCase() : previous.dhcp;
if (wants("dhcp")) console.log(JSON.stringify(dhcp, null, 2));
const tcp = wants("tcp") ? await tcpCase() : previous.tcp;
if (wants("tcp")) console.log(JSON.stringify(tcp, null, 2));
const result: NetBenchResult = {
  ...previous,
  ...(sg ?? {}),
  meta: sg?.meta ?? previous.meta ?? (migration ?? dhcp ?? tcp)!.meta,
  ...(migration ? { migration } : {}),
  ...(dhcp ? { dhcp } : {}),
  ...(tcp ? { tcp } : {}),
};
await Deno.writeTextFile(OUT, JSON.stringify(result, null, 2) + "\n");
console.log(`wrote ${OUT}`);
