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
 *   deno task bench:net [--case sg|migration|all] [--changes 50] [--voters 3] [--migrations 10]
 *
 * Writes bench/results/net.json (`NetBenchResult`); a run of one case keeps the other case's
 * section from the file as it was.
 */
import { type Figure, figure } from "./lib/figures.ts";
import { type RunMeta, runMeta } from "./lib/run_meta.ts";
import { percentile } from "./lib/stats.ts";
import { guestImportArgs, testGuest } from "./lib/guest.ts";
import { type NetCluster, startNetCluster } from "./lib/net_cluster.ts";
import { migrateUnderPing, pingerUserData } from "./lib/net_migration.ts";
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
    /** The longest outage per migration, in pings. */
    longestOutagePings: Figure;
    /** Migration operation time (the source's view: setup, memory, switchover). */
    migrationMs: Figure;
    /** Guest paused (source stopped → destination resumed). */
    guestPausedMs: Figure;
    /** Migrations that lost at most goalLost pings. */
    withinGoal: number;
    goalLost: number;
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
const GOAL_LOST = 2;
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
    for (let i = 0; i < MIGRATIONS; i++) {
      const to = i % 2 ? "n1" : "n2";
      const r = await migrateUnderPing(net, {
        pinger: "pa",
        target: "pb",
        peerIp: b,
        to,
        port: "nv-pb-0",
      });
      lost.push(r.lost);
      gaps.push(r.longestGap);
      totalMs.push(Number(r.result.totalMs));
      pausedMs.push(Number(r.result.guestPausedMs));
      console.log(
        `migration ${i + 1} → ${to}: ${r.lost} pings lost (longest outage ${r.longestGap}), ` +
          `${r.result.totalMs} ms, guest paused ${r.result.guestPausedMs} ms`,
      );
    }
    return {
      meta: { ...meta, date: new Date().toISOString() },
      setup: { hosts: 2, pingIntervalMs: 100, guestMemoryMiB: memoryMiB, migrations: MIGRATIONS },
      lostPackets: figure(lost, 1),
      longestOutagePings: figure(gaps, 1),
      migrationMs: figure(totalMs, 1),
      guestPausedMs: figure(pausedMs, 1),
      withinGoal: lost.filter((n) => n <= GOAL_LOST).length,
      goalLost: GOAL_LOST,
    };
  } finally {
    await net.stop();
  }
}

if (!["sg", "migration", "all"].includes(CASE)) {
  console.error(`--case: sg, migration or all, not "${CASE}"`);
  Deno.exit(2);
}
// A run of one case keeps what the file says of the other.
const previous: Partial<NetBenchResult> = await Deno.readTextFile(OUT).then(
  (t) => JSON.parse(t),
  () => ({}),
);
const sg = CASE === "migration" ? null : await securityGroupCase();
const migration = CASE === "sg" ? previous.migration : await migrationCase();
if (migration && CASE !== "sg") console.log(JSON.stringify(migration, null, 2));
const result: NetBenchResult = {
  ...previous,
  ...(sg ?? {}),
  meta: sg?.meta ?? previous.meta ?? migration!.meta,
  ...(migration ? { migration } : {}),
};
await Deno.writeTextFile(OUT, JSON.stringify(result, null, 2) + "\n");
console.log(`wrote ${OUT}`);
