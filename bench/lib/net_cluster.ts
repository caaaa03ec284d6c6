/**
 * A novactl cluster with real networking for tests and benchmarks: every node
 * in its own network namespace (./netns.ts) with its own Open vSwitch and
 * ovn-controller, the voters running OVN central. Adds what such runs need
 * beside the cluster: the CLI and API as admin, a command in a node's
 * namespace against that node's own OVS, a failure report of every host's
 * OVS and the chassis, and a `stop` that leaves no daemon, namespace, bridge
 * or tap behind, whatever failed.
 *
 * ```ts
 * const net = await startNetCluster({ prefix: "novactl-sg-", hosts: 2 });
 * try {
 *   await net.ok("network", "create", "blue", "--subnet", "10.9.0.0/24");
 * } finally {
 *   await net.stop();
 * }
 * ```
 *
 * @module
 */
import { NovactlCluster } from "./novactl_cluster.ts";
import { NetworkLab } from "./netns.ts";
import { fetchConsole } from "./guest.ts";
import { api, cli, eventually } from "../../tests/support/api.ts";

export interface NetCluster {
  cluster: NovactlCluster;
  lab: NetworkLab;
  /** The API URL of the first node not killed or paused here (n1's, unless it was). */
  url(): string;
  /** `novactl ARGS` against `url()` as admin; throws with its stderr unless it exits 0. */
  ok(...args: string[]): Promise<string>;
  /** `/api/v1/...` on `url()` as admin. */
  api<T = Record<string, unknown>>(
    path: string,
    init?: { method?: string; body?: unknown },
  ): Promise<{ status: number; body: T }>;
  /** The end of a VM's serial console. */
  consoleOf(vm: string, bytes?: number): Promise<string>;
  /** Runs `cmd` in `node`'s namespace against its own OVS (ovs-vsctl, ovs-ofctl); stdout. */
  sh(node: string, cmd: string[]): Promise<string>;
  /**
   * `ovn-nbctl ARGS` against the northbound database of the first OVN central member that
   * still runs (n1's unless it was killed); stdout.
   */
  nbctl(...args: string[]): Promise<string>;
  /** `ovn-sbctl ARGS` against the southbound database, as `nbctl`; stdout. */
  sbctl(...args: string[]): Promise<string>;
  /** `ovn-northd`'s own view on `node`: "active", "standby" or "paused"; null when not running. */
  northdStatus(node: string): Promise<string | null>;
  /**
   * A host losing power: SIGKILLs the node process, then everything else in its namespace
   * (fencing watchdog, QEMU, its OVS and OVN daemons), and waits until none is left.
   */
  killHost(node: string): Promise<void>;
  /** SIGSTOPs the node process and its `ovn-northd` (a hung host); `resumeHost` continues them. */
  pauseHost(node: string): Promise<void>;
  resumeHost(node: string): Promise<void>;
  /** Starts a killed host's node again from its data dir; it brings its daemons up itself. */
  restartHost(node: string): Promise<void>;
  /** Prints what a failure needs explained: consoles of `vms`, each host's OVS, the chassis. */
  diagnose(vms?: string[]): Promise<void>;
  /** Stops the nodes, then kills what still runs in the namespaces and deletes them. */
  stop(): Promise<void>;
}

const dec = new TextDecoder();

/** Starts `hosts` nodes with networking (`voters` of them voters) and waits for every chassis. */
/** The unix socket of database `db` of the first central member whose server still runs. */
async function liveSocket(cluster: NovactlCluster, db: string): Promise<string> {
  for (const n of cluster.nodes) {
    const run = `${n.dataDir}/ovn/run`;
    const pid = Number((await Deno.readTextFile(`${run}/${db}.pid`).catch(() => "0")).trim());
    if (pid > 0 && await Deno.stat(`/proc/${pid}`).then(() => true, () => false)) {
      return `${run}/${db}.sock`;
    }
  }
  throw new Error(`no OVN central member runs ${db}`);
}

export async function startNetCluster(
  opts: { prefix: string; hosts: number; voters?: number },
): Promise<NetCluster> {
  await NetworkLab.sweepStale();
  const lab = await NetworkLab.create({ txChecksumOff: true });
  const base = await Deno.makeTempDir({ dir: "/dev/shm", prefix: opts.prefix });
  const keep = Deno.env.get("NOVACTL_KEEP_TEST_DIRS") === "1";
  const cluster = new NovactlCluster({
    baseDir: base,
    network: lab,
    networking: true,
    keepBaseDir: keep,
    env: { NOVACTL_ACCEL: "tcg" },
  });
  // Nodes the test killed or paused: the CLI and API go to another.
  const down = new Set<string>();
  const url = () => {
    const up = cluster.nodes.find((n) => !down.has(n.name));
    if (!up) throw new Error("every node is down");
    return up.url;
  };
  const northdPid = async (node: string) =>
    Number(
      (await Deno.readTextFile(`${cluster.node(node).dataDir}/ovn/run/ovn-northd.pid`)
        .catch(() => "0")).trim(),
    );
  const ovnctl = async (tool: string, db: string, args: string[]) => {
    const sock = await liveSocket(cluster, db);
    const out = await new Deno.Command(tool, {
      args: [`--db=unix:${sock}`, "--timeout=10", ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`${tool} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
    return dec.decode(out.stdout);
  };
  const ovsEnv = (node: string) => ({ OVS_RUNDIR: `${cluster.node(node).dataDir}/ovs/run` });
  const net: NetCluster = {
    cluster,
    lab,
    url,
    async ok(...args) {
      const r = await cli([...args, "--server", url(), "--token", cluster.adminToken]);
      if (r.code !== 0) throw new Error(`novactl ${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
      return r.stdout;
    },
    api: (path, init = {}) =>
      api(`${url()}${path}`, { ...init, token: cluster.adminToken }) as never,
    consoleOf: (vm, bytes) => fetchConsole(url(), cluster.adminToken, vm, bytes),
    async sh(node, cmd) {
      const n = cluster.node(node);
      const [tool, ...rest] = cmd;
      // ovs-vsctl's default database is the system one; this node runs its own.
      const args = tool === "ovs-vsctl"
        ? [`--db=unix:${n.dataDir}/ovs/run/db.sock`, ...rest]
        : rest;
      const out = await new Deno.Command("ip", {
        args: ["netns", "exec", n.namespace!, tool, ...args],
        env: ovsEnv(node),
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) throw new Error(`${cmd.join(" ")} on ${node}: ${dec.decode(out.stderr)}`);
      return dec.decode(out.stdout);
    },
    nbctl: (...args) => ovnctl("ovn-nbctl", "ovnnb_db", args),
    sbctl: (...args) => ovnctl("ovn-sbctl", "ovnsb_db", args),
    async northdStatus(node) {
      const ctl = `${cluster.node(node).dataDir}/ovn/run/ovn-northd.ctl`;
      const out = await new Deno.Command("ovs-appctl", {
        args: ["-T", "5", "-t", ctl, "status"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) return null;
      return /Status: (\w+)/.exec(dec.decode(out.stdout))?.[1] ?? null;
    },
    async killHost(node) {
      down.add(node);
      await cluster.kill(node, "SIGKILL");
      await lab.killAll(node);
    },
    async pauseHost(node) {
      down.add(node);
      const pid = await northdPid(node);
      if (pid > 0) Deno.kill(pid, "SIGSTOP");
      await cluster.kill(node, "SIGSTOP");
    },
    async restartHost(node) {
      await cluster.restart(node);
      down.delete(node);
    },
    async resumeHost(node) {
      await cluster.kill(node, "SIGCONT");
      const pid = await northdPid(node);
      if (pid > 0) Deno.kill(pid, "SIGCONT");
      down.delete(node);
    },
    async diagnose(vms = []) {
      for (const vm of vms) {
        console.error(
          `--- ${vm} console\n${(await net.consoleOf(vm).catch(() => "")).slice(-3000)}`,
        );
      }
      for (const n of cluster.nodes) {
        const show = await net.sh(n.name, ["ovs-vsctl", "show"]).catch((e) => String(e));
        const addrs = await net.sh(n.name, ["ip", "-4", "-o", "addr"]).catch((e) => String(e));
        console.error(`--- ${n.name} ovs\n${show}\n--- ${n.name} addresses\n${addrs}`);
      }
      console.error(`--- chassis\n${await net.sbctl("show").catch((e) => String(e))}`);
    },
    async stop() {
      // A paused node would only stop at its SIGKILL timeout.
      for (const n of down) await net.resumeHost(n).catch(() => {});
      await cluster.stop().catch((err) => console.error("cluster stop:", err));
      // Kills what still runs in the namespaces (OVS/OVN daemons, QEMU) and deletes them with
      // their bridges and taps.
      await lab.destroy();
      if (!keep) await Deno.remove(base, { recursive: true }).catch(() => {});
    },
  };
  try {
    await cluster.start(opts.hosts, { voters: opts.voters ?? 1 });
    // A joining host starts its chassis once it knows the voters' southbound remotes.
    const pidOf = async (node: string) =>
      Number(
        (await Deno.readTextFile(`${cluster.node(node).dataDir}/ovs/run/ovn-controller.pid`)
          .catch(() => "0")).trim(),
      );
    for (const n of cluster.nodes) {
      await eventually(
        `${n.name} runs ovn-controller`,
        async () => (await pidOf(n.name)) > 0,
        30_000,
      );
    }
    return net;
  } catch (err) {
    await net.stop();
    throw err;
  }
}
