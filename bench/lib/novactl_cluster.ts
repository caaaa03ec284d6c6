/**
 * A multi-process novactl cluster on loopback, driven only through the public CLI
 * and HTTP contract (usable by benchmarks and multi-process tests):
 *
 *   novactl node start --name n1 --data-dir D1 --listen 127.0.0.1:0
 *     binds a port the kernel picks, reports it in D1/listen.json ({url, listen}),
 *     bootstraps a one-node cluster and writes D1/admin.token
 *   novactl cluster token create --server URL --token ADMIN
 *     prints a fresh join token alone on the last line of stdout
 *   novactl node start --name nK --data-dir DK --listen 127.0.0.1:0 --join URL --token-file F
 *     (F holds the join token; nodes serve HTTPS with the cluster CA, D1/ca.crt, which this
 *     process then trusts: `cluster.fetch`, `requestJson`, and CLI runs with NOVACTL_CA)
 *   GET /readyz                         → 200 once the node serves and is a registered host
 *   GET /api/v1/cluster (Bearer ADMIN)  → ClusterStatus
 *
 * Restarting a node re-runs `node start` with the same name, data dir and `--listen` (port 0
 * included) but without `--join`: the data dir already holds its state, and the node binds the
 * port it had, so its URL does not change (checked here).
 *
 * With `network` (e.g. a `NetworkLab` from ./netns.ts) each node instead runs in its own
 * network namespace, `ip netns exec NS deno run ... --listen ADDRESS:PORT`, so tests can
 * cut links between nodes in the network itself.
 *
 * ```ts
 * await using cluster = new NovactlCluster();
 * await cluster.start(3);
 * const leader = await cluster.leaderUrl();
 * ```
 */

import { trackRunning } from "./cleanup.ts";
import { ManagedProcess, runToCompletion } from "./process.ts";
import type { NodeNetwork } from "./netns.ts";
import { LOOPBACK, requestJson, tailFile, WaitAborted, waitFor } from "./util.ts";
import { clusterFetch, trustClusterCa } from "./tls.ts";

export interface NovactlMemberStatus {
  name: string;
  url: string;
  role: "voter" | "learner";
  state: string;
}

/** `GET /api/v1/cluster`: the contract fields plus the progress indexes the server reports. */
export interface ClusterStatus {
  leader: string | null;
  term: number;
  commitIndex: number;
  members: NovactlMemberStatus[];
  clusterId: string;
  /** Name of the node that answered. */
  self: string;
  appliedIndex: number;
  lastIndex: number;
  snapshotIndex: number;
}

export interface StartOptions {
  /** Voters to wait for; joiners beyond this count may stay learners. Default: `size`. */
  voters?: number;
}

export interface AddNodeOptions {
  /** Join token to use; default: a fresh one from `createJoinToken()`. */
  joinToken?: string;
  /** Default: `n<K>` with K = number of nodes ever added + 1. */
  name?: string;
  /**
   * What to wait for after `/readyz`: `"member"` (default) — listed in the
   * member list in any role; `"voter"` — promoted to voter.
   */
  awaitRole?: "member" | "voter";
}

/** Simulated hosts run together in one process (`novactl node simulate-hosts`). */
export interface SimulatedHostGroup {
  names: string[];
  dataDir: string;
  logPath: string;
  /** `novactl` arguments it runs with (the same again on a restart). */
  args: string[];
  /** Null until spawned. */
  process: ManagedProcess | null;
}

export interface NovactlNode {
  name: string;
  /** Base URL, e.g. `http://127.0.0.1:41234`, as the node reported it (empty until spawned). */
  url: string;
  /** `host:port` passed to `--listen` (port 0 unless in a network namespace). */
  listen: string;
  dataDir: string;
  logPath: string;
  /** Network namespace the node runs in (only with `NovactlClusterOptions.network`). */
  namespace?: string;
  process?: ManagedProcess;
}

export interface NovactlClusterOptions {
  /** Where data dirs and logs go; default: a fresh `Deno.makeTempDir()`. */
  baseDir?: string;
  /** Entry point; default: `main.ts` at the repository root. */
  mainTs?: string;
  /**
   * Another entry point for some nodes, by node name (e.g. an older release's `main.ts`, for
   * rolling upgrades); it runs from its own directory. See {@link NovactlCluster.setProgram}.
   */
  programs?: Record<string, string>;
  /**
   * Extra environment for the nodes that run a given entry point, by entry point (e.g. a PATH
   * with the QEMU an older release needs); on top of `env`.
   */
  programEnv?: Record<string, Record<string, string>>;
  /** Deno executable; default: the one running this code. */
  denoPath?: string;
  /** Arguments placed before the entry point; default `["run", "-A"]`. */
  denoArgs?: string[];
  /**
   * Start nodes with `--insecure-http` (plain HTTP on loopback, per-node peer credentials),
   * e.g. for benchmarks comparing TLS with plain HTTP. Default: HTTPS.
   */
  insecureHttp?: boolean;
  /**
   * Let nodes run their own OVS and OVN (`node start` does by default). Off unless asked
   * (`--networking off`): nodes sharing one network namespace would share `br-int`, and the
   * daemons outlive the nodes by design.
   */
  networking?: boolean;
  /** Extra arguments appended to every `node start`. */
  extraNodeArgs?: string[];
  /** Extra arguments for one node's `node start`, by node name (e.g. its `--label`s). */
  nodeArgs?: Record<string, string[]>;
  env?: Record<string, string>;
  /** Timeout for each startup / membership wait. Default 60 s. */
  startTimeoutMs?: number;
  /** Grace period between SIGTERM and SIGKILL in `stop()`. Default 5 s. */
  stopTimeoutMs?: number;
  /** Keep the base dir after `stop()` even if this class created it. */
  keepBaseDir?: boolean;
  /**
   * Puts every node in the namespace and at the address `network.attach(name)` gives it,
   * instead of on loopback; the caller owns the network and tears it down.
   */
  network?: NodeNetwork;
}

const DEFAULT_MAIN_TS = new URL("../../main.ts", import.meta.url).pathname;
const ADMIN_TOKEN_FILE = "admin.token";
/** Where `node start` reports the address it bound (see cmd/node_start.ts). */
const LISTEN_FILE = "listen.json";
const TERMINATING_SIGNALS: ReadonlySet<Deno.Signal> = new Set([
  "SIGKILL",
  "SIGTERM",
  "SIGINT",
  "SIGQUIT",
]);

export class NovactlCluster {
  readonly nodes: NovactlNode[] = [];
  /** Groups of simulated hosts, each one process (see {@link addSimulatedHosts}). */
  readonly simulatedHostGroups: SimulatedHostGroup[] = [];
  adminToken = "";
  readonly #options: NovactlClusterOptions;
  #baseDir?: string;
  #ownsBaseDir = false;
  #keepBaseDir: boolean;
  #untrack: () => void = () => {};

  constructor(options: NovactlClusterOptions = {}) {
    this.#options = options;
    this.#keepBaseDir = options.keepBaseDir ?? false;
  }

  /** Base URLs of all nodes, in start order. */
  get urls(): string[] {
    return this.nodes.map((node) => node.url);
  }

  get baseDir(): string {
    if (!this.#baseDir) throw new Error("cluster not started");
    return this.#baseDir;
  }

  get logPaths(): string[] {
    return this.nodes.map((node) => node.logPath);
  }

  get #startTimeoutMs(): number {
    return this.#options.startTimeoutMs ?? 60_000;
  }

  node(name: string): NovactlNode {
    const node = this.nodes.find((candidate) => candidate.name === name);
    if (!node) throw new Error(`unknown node ${name}`);
    return node;
  }

  /**
   * Bootstraps n1, then joins n2..nN one at a time (each waited for as a member in
   * any role: novactl promotes learners only towards an odd voter count), and
   * finally waits for `voters` voters and a leader. On failure, stops every
   * spawned process (keeping the logs) and throws with log tails.
   */
  async start(size = 3, options: StartOptions = {}): Promise<this> {
    const voters = options.voters ?? size;
    try {
      await this.#prepareBaseDir();
      await this.#bootstrap();
      for (let i = 1; i < size; i++) await this.addNode();
      await this.waitForVoters(voters);
      return this;
    } catch (error) {
      const logs = await this.describeLogs();
      this.#keepBaseDir = true;
      await this.stop();
      throw new Error(`novactl cluster failed to start: ${(error as Error).message}\n${logs}`);
    }
  }

  /**
   * Starts one more node with `--join <a live member> --token <join token>`, waits
   * for its `/readyz`, then for `awaitRole` (see `AddNodeOptions`).
   */
  async addNode(options: AddNodeOptions = {}): Promise<NovactlNode> {
    const joinToken = options.joinToken ?? (await this.createJoinToken());
    const joinUrl = await this.#liveMemberUrl();
    const node = await this.#planNode(options.name ?? `n${this.nodes.length + 1}`);
    this.nodes.push(node);
    // From a file, as operators should (argv shows in ps).
    const tokenFile = `${this.baseDir}/${node.name}.join-token`;
    await Deno.writeTextFile(tokenFile, joinToken + "\n", { mode: 0o600 });
    await this.#spawn(node, ["--join", joinUrl, "--token-file", tokenFile]);
    await this.#waitReady(node);
    await this.#waitForMembership(node.name, options.awaitRole ?? "member");
    return node;
  }

  /**
   * SIMULATION: `count` more simulated hosts, all in one process (`novactl node simulate-hosts`),
   * named PREFIX1 … PREFIXcount, each joining with a token of its own. Resolves once every one
   * of them is a member. `args` go to the command (e.g. `--simulated-cpus`).
   */
  async addSimulatedHosts(
    count: number,
    prefix: string,
    args: string[] = [],
  ): Promise<SimulatedHostGroup> {
    const leader = await this.leaderUrl();
    const tokens: string[] = [];
    for (let i = 0; i < count; i++) {
      const r = await requestJson<{ token: string }>(`${leader}/api/v1/cluster/tokens`, {
        method: "POST",
        token: this.adminToken,
        body: {},
      });
      if (!r.body?.token) throw new Error(`join token ${i + 1}: HTTP ${r.status}`);
      tokens.push(r.body.token);
    }
    const dataDir = `${this.baseDir}/${prefix}`;
    const tokenFile = `${this.baseDir}/${prefix}.join-tokens`;
    await Deno.writeTextFile(tokenFile, tokens.join("\n") + "\n", { mode: 0o600 });
    const group: SimulatedHostGroup = {
      names: Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`),
      dataDir,
      logPath: `${this.baseDir}/${prefix}.log`,
      args: [
        ...["node", "simulate-hosts", "--count", String(count), "--name-prefix", prefix],
        ...["--data-dir", dataDir, "--join", leader, "--token-file", tokenFile],
        ...(this.#options.insecureHttp ? ["--insecure-http"] : []),
        ...args,
      ],
      process: null,
    };
    this.simulatedHostGroups.push(group);
    await this.#spawnSimulatedHosts(group);
    return group;
  }

  /** Starts a stopped group of simulated hosts again (their data dirs hold their identities). */
  async restartSimulatedHosts(group: SimulatedHostGroup): Promise<void> {
    await group.process?.stop(this.#options.stopTimeoutMs);
    await this.#spawnSimulatedHosts(group);
  }

  /** Spawns the group's process and waits until the leader hears from every one of its hosts. */
  async #spawnSimulatedHosts(group: SimulatedHostGroup): Promise<void> {
    const process = group.process = await ManagedProcess.spawn({
      name: group.names[0],
      command: this.#denoPath,
      args: [...this.#denoArgs, this.#mainTs, ...group.args],
      logPath: group.logPath,
      cwd: this.#cwd,
      env: this.#options.env,
    });
    const { names, logPath } = group;
    await waitFor(async () => {
      if (process.exited) throw new Error(`${names[0]}… exited:\n${await tailFile(logPath)}`);
      const ready = (await this.status()).members.filter((m) => m.state === "ready");
      return names.every((n) => ready.some((m) => m.name === n)) || undefined;
    }, {
      timeoutMs: this.#startTimeoutMs + names.length * 5_000,
      description: `${names.length} simulated hosts ${names[0]}… ready`,
    });
  }

  /** `addNode` with a caller-supplied join token. */
  addNodeWithToken(
    joinToken: string,
    options: Omit<AddNodeOptions, "joinToken"> = {},
  ): Promise<NovactlNode> {
    return this.addNode({ ...options, joinToken });
  }

  /** Runs `novactl cluster token create` against a live member (the leader if known). */
  async createJoinToken(): Promise<string> {
    const server = await this.#liveMemberUrl();
    const stdout = await this.cli([
      "cluster",
      "token",
      "create",
      "--server",
      server,
      "--token",
      this.adminToken,
    ]);
    const token = lastNonEmptyLine(stdout);
    if (!token) throw new Error(`'cluster token create' printed no token:\n${stdout}`);
    return token;
  }

  /**
   * The cluster CA certificate (n1's DATA_DIR/ca.crt, else that of the first node that still
   * has one, e.g. after n1's data dir was lost): what clients pass as `--ca`.
   */
  get caFile(): string {
    for (const n of this.nodes) {
      try {
        Deno.statSync(`${n.dataDir}/ca.crt`);
        return `${n.dataDir}/ca.crt`;
      } catch { /* lost: try the next */ }
    }
    return `${this.baseDir}/n1/ca.crt`;
  }

  /** `fetch` trusting this cluster's CA (and any other registered in this process). */
  fetch(url: string | URL, init: RequestInit = {}): Promise<Response> {
    return clusterFetch(url, init);
  }

  /** Runs a novactl CLI command to completion and returns its stdout. */
  cli(args: string[]): Promise<string> {
    return runToCompletion(this.#denoPath, [...this.#denoArgs, this.#mainTs, ...args], {
      cwd: this.#cwd,
      env: { NOVACTL_CA: this.caFile, ...this.#options.env },
      timeoutMs: this.#startTimeoutMs,
    });
  }

  /** `GET /api/v1/cluster` from the given node, or from the first live node that answers. */
  async status(from?: string): Promise<ClusterStatus> {
    const candidates = from ? [this.node(from)] : this.#liveNodes();
    let lastError: unknown = new Error("no live nodes");
    for (const node of candidates) {
      try {
        return await this.#fetchStatus(node);
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError;
  }

  /** Waits for ≥ `count` voters (including every name in `mustInclude`) and a known leader. */
  waitForVoters(count: number, mustInclude: string[] = []): Promise<ClusterStatus> {
    return waitFor(async () => {
      const status = await this.status();
      const voters = status.members.filter((m) => m.role === "voter").map((m) => m.name);
      const complete = voters.length >= count && mustInclude.every((name) => voters.includes(name));
      return complete && status.leader ? status : undefined;
    }, { timeoutMs: this.#startTimeoutMs, description: `${count} voters and a leader` });
  }

  #waitForMembership(name: string, role: "member" | "voter"): Promise<ClusterStatus> {
    return waitFor(async () => {
      const status = await this.status();
      const member = status.members.find((m) => m.name === name);
      const done = member && (role === "member" || member.role === "voter");
      return done && status.leader ? status : undefined;
    }, { timeoutMs: this.#startTimeoutMs, description: `${name} to become a ${role}` });
  }

  /** Name of the current leader (waits while there is none). */
  async leaderName(): Promise<string> {
    const status = await waitFor(async () => {
      const current = await this.status();
      return current.leader ? current : undefined;
    }, { timeoutMs: this.#startTimeoutMs, description: "a novactl leader" });
    return status.leader!;
  }

  /** Base URL of the current leader, as advertised in the member list. */
  async leaderUrl(): Promise<string> {
    const name = await this.leaderName();
    const advertised = (await this.status()).members.find((m) => m.name === name)?.url;
    return stripTrailingSlash(advertised ?? this.node(name).url);
  }

  /**
   * Sends `signal` to the node's process group. For terminating signals
   * (KILL/TERM/INT/QUIT) waits for the exit; others (e.g. SIGSTOP) return at once.
   */
  async kill(name: string, signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const process = this.node(name).process;
    if (!process || process.exited) return;
    process.signal(signal);
    if (TERMINATING_SIGNALS.has(signal)) await process.wait();
  }

  /**
   * Restarts a stopped or killed node from its data dir (no --join) and waits for /readyz.
   * `args` go to its `node start` this time only (e.g. `--restore FILE`).
   */
  async restart(name: string, args: string[] = []): Promise<void> {
    const node = this.node(name);
    if (node.process && !node.process.exited) await node.process.stop(this.#options.stopTimeoutMs);
    if (args.length) node.url = ""; // a new identity (a restore) may get a new address
    await this.#spawn(node, args);
    await this.#waitReady(node);
  }

  /**
   * Starts this cluster as `node start --name NAME --restore FILE` on a fresh data dir
   * (a one-node cluster holding the backup's state) instead of bootstrapping it; its
   * `DIR/admin.token` becomes {@link adminToken}.
   */
  async restore(file: string, name = "n1"): Promise<this> {
    try {
      await this.#prepareBaseDir();
      await this.#bootstrap(name, ["--restore", file]);
      await this.waitForVoters(1);
      return this;
    } catch (error) {
      const logs = await this.describeLogs();
      this.#keepBaseDir = true;
      await this.stop();
      throw new Error(`novactl cluster failed to restore: ${(error as Error).message}\n${logs}`);
    }
  }

  /**
   * The entry point `name` runs from its next (re)start on: `mainTs`, or null for the
   * cluster's default. Upgrading a node is `stopNode`, `setProgram`, `restart`.
   */
  setProgram(name: string, mainTs: string | null): void {
    const programs = this.#options.programs ??= {};
    if (mainTs === null) delete programs[name];
    else programs[name] = mainTs;
  }

  /** Gracefully stops one node (SIGTERM, then SIGKILL after the stop timeout). */
  async stopNode(name: string): Promise<void> {
    await this.node(name).process?.stop(this.#options.stopTimeoutMs);
  }

  /** QEMU pids of the VMs a node runs, by VM name (see `qemuPidsIn`). */
  qemuPids(name: string): Promise<Map<string, number>> {
    return qemuPidsIn(this.node(name).dataDir);
  }

  /** SIGKILLs every QEMU of a node (a host losing power takes its VMs with it). */
  async killQemus(name: string): Promise<void> {
    for (const pid of (await this.qemuPids(name)).values()) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }

  /**
   * Pid of a node's fencing watchdog (`novactl host watchdog`), from its pidfile; it runs in its
   * own session, so signals to the node's process group do not reach it.
   */
  async watchdogPid(name: string): Promise<number | null> {
    try {
      const pid = Number(
        (await Deno.readTextFile(`${this.node(name).dataDir}/watchdog.pid`)).trim(),
      );
      return pid > 0 && await isAlive(pid) ? pid : null;
    } catch {
      return null;
    }
  }

  /** SIGKILLs a node's fencing watchdog (its HA VMs die with it). */
  async killWatchdog(name: string): Promise<void> {
    const pid = await this.watchdogPid(name);
    if (pid === null) return;
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }

  /** Stops every node, its watchdog and its VMs; removes the base dir if this class created it (unless kept). */
  async stop(): Promise<void> {
    this.#untrack();
    await Promise.all([
      ...this.simulatedHostGroups.map((g) => g.process?.stop(this.#options.stopTimeoutMs)),
      ...this.nodes.map((node) => node.process?.stop(this.#options.stopTimeoutMs)),
    ]);
    for (const n of this.nodes) await this.killWatchdog(n.name).catch(() => {});
    for (const n of this.nodes) await this.killQemus(n.name).catch(() => {});
    if (this.#ownsBaseDir && this.#baseDir && !this.#keepBaseDir) {
      await Deno.remove(this.#baseDir, { recursive: true }).catch(() => {});
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Log file paths plus the tail of each log, for failure messages. */
  async describeLogs(): Promise<string> {
    const parts = await Promise.all(
      this.nodes.map(async (n) => `== ${n.name} log: ${n.logPath}\n${await tailFile(n.logPath)}`),
    );
    return parts.join("\n");
  }

  async #prepareBaseDir(): Promise<void> {
    // A test that times out stops this cluster through the registry (bench/lib/cleanup.ts).
    this.#untrack = trackRunning(this);
    if (this.#options.baseDir) {
      this.#baseDir = this.#options.baseDir;
      await Deno.mkdir(this.#baseDir, { recursive: true });
    } else {
      this.#baseDir = await Deno.makeTempDir({ prefix: "novactl-cluster-" });
      this.#ownsBaseDir = true;
    }
  }

  async #bootstrap(name = "n1", args: string[] = []): Promise<void> {
    const node = await this.#planNode(name);
    this.nodes.push(node);
    await this.#spawn(node, args);
    this.adminToken = await this.#waitAdminToken(node);
    trustClusterCa(this.caFile); // written before admin.token
    await this.#waitReady(node);
  }

  async #planNode(name: string): Promise<NovactlNode> {
    const attachment = await this.#options.network?.attach(name);
    // Port 0: the node binds a port the kernel picks and reports it; nothing can take it first.
    const listen = attachment?.listen ?? `${LOOPBACK}:0`;
    return {
      name,
      url: "",
      listen,
      dataDir: `${this.baseDir}/${name}`,
      logPath: `${this.baseDir}/${name}.log`,
      namespace: attachment?.namespace,
    };
  }

  async #spawn(node: NovactlNode, joinArgs: string[]): Promise<void> {
    const mainTs = this.#options.programs?.[node.name] ?? this.#mainTs;
    const args = [
      ...this.#denoArgs,
      mainTs,
      ...[
        "node",
        "start",
        "--name",
        node.name,
        "--data-dir",
        node.dataDir,
        "--listen",
        node.listen,
      ],
      ...joinArgs,
      ...(this.#options.insecureHttp ? ["--insecure-http"] : []),
      ...(this.#options.networking ? [] : ["--networking", "off"]),
      ...(this.#options.extraNodeArgs ?? []),
      ...(this.#options.nodeArgs?.[node.name] ?? []),
    ];
    await Deno.remove(`${node.dataDir}/${LISTEN_FILE}`).catch(() => {}); // a stale report
    // `ip netns exec` execs the command in place, so signals still reach the node itself.
    const inNamespace = node.namespace ? ["netns", "exec", node.namespace, this.#denoPath] : [];
    node.process = await ManagedProcess.spawn({
      name: node.name,
      command: node.namespace ? "ip" : this.#denoPath,
      args: [...inNamespace, ...args],
      logPath: node.logPath,
      cwd: new URL(".", `file://${mainTs}`).pathname,
      env: { ...this.#options.env, ...this.#options.programEnv?.[mainTs] },
    });
    await this.#learnUrl(node);
  }

  /** The pid node `name` reports in its listen file (the node process itself). */
  async nodePid(name: string): Promise<number> {
    const report = JSON.parse(await Deno.readTextFile(`${this.node(name).dataDir}/${LISTEN_FILE}`));
    return Number(report.pid);
  }

  /** Reads the URL the node reports having bound; a restarted node must keep its old one. */
  async #learnUrl(node: NovactlNode): Promise<void> {
    const path = `${node.dataDir}/${LISTEN_FILE}`;
    const reported = await waitFor(async () => {
      assertRunning(node);
      const report = JSON.parse(await Deno.readTextFile(path)) as { url?: string };
      return report.url ? stripTrailingSlash(report.url) : undefined;
    }, { timeoutMs: this.#startTimeoutMs, description: `${node.name} ${path}` });
    if (node.url && node.url !== reported) {
      throw new Error(`${node.name} restarted at ${reported}, not at its old URL ${node.url}`);
    }
    node.url = reported;
  }

  #waitAdminToken(node: NovactlNode): Promise<string> {
    const path = `${node.dataDir}/${ADMIN_TOKEN_FILE}`;
    return waitFor(async () => {
      assertRunning(node);
      const token = (await Deno.readTextFile(path)).trim();
      return token || undefined;
    }, { timeoutMs: this.#startTimeoutMs, description: `${path}` });
  }

  async #waitReady(node: NovactlNode): Promise<void> {
    await waitFor(async () => {
      assertRunning(node);
      const response = await clusterFetch(`${node.url}/readyz`, {
        signal: AbortSignal.timeout(2_000),
      });
      await response.body?.cancel();
      return response.status === 200 ? true : undefined;
    }, { timeoutMs: this.#startTimeoutMs, description: `${node.name} GET /readyz → 200` });
  }

  async #fetchStatus(node: NovactlNode): Promise<ClusterStatus> {
    const { status, body } = await requestJson<ClusterStatus>(`${node.url}/api/v1/cluster`, {
      token: this.adminToken,
    });
    if (status !== 200 || !body || !Array.isArray(body.members)) {
      throw new Error(`${node.name} GET /api/v1/cluster → ${status}`);
    }
    return body;
  }

  /** URL of a running node that is in the member list, preferring the leader. */
  async #liveMemberUrl(): Promise<string> {
    const status = await this.status();
    const members = new Set(status.members.map((m) => m.name));
    const live = this.#liveNodes().filter((node) => members.has(node.name));
    const chosen = live.find((node) => node.name === status.leader) ?? live[0];
    if (!chosen) throw new Error("no running node is a cluster member");
    return chosen.url;
  }

  /** Running nodes that have reported their URL. */
  #liveNodes(): NovactlNode[] {
    return this.nodes.filter((node) => node.url && node.process && !node.process.exited);
  }

  get #mainTs(): string {
    return this.#options.mainTs ?? DEFAULT_MAIN_TS;
  }

  get #cwd(): string {
    return new URL(".", `file://${this.#mainTs}`).pathname;
  }

  get #denoPath(): string {
    return this.#options.denoPath ?? Deno.execPath();
  }

  get #denoArgs(): string[] {
    return this.#options.denoArgs ?? ["run", "-A"];
  }
}

function assertRunning(node: NovactlNode): void {
  if (node.process?.exited) {
    throw new WaitAborted(`${node.name} exited early (log: ${node.logPath})`);
  }
}

function lastNonEmptyLine(text: string): string | undefined {
  return text.split("\n").map((line) => line.trim()).filter(Boolean).at(-1);
}

function stripTrailingSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

/**
 * QEMU pids of the VMs under a node's data dir, from their pidfiles (VMs outlive
 * node processes, so they are found there, not as children). Only "not found"
 * means "not running" (no VM yet, no pidfile, a VM dir or process that vanished
 * mid-scan); a missing data dir or any other read error throws, so a check such
 * as "no QEMU left" can never pass without really looking.
 */
export async function qemuPidsIn(dataDir: string): Promise<Map<string, number>> {
  if (!(await Deno.stat(dataDir)).isDirectory) throw new Error(`${dataDir} is not a directory`);
  const out = new Map<string, number>();
  const root = `${dataDir}/vms`;
  for (const vm of await readDirNames(root)) {
    const text = await readIfExists(`${root}/${vm}/qemu.pid`);
    if (text === null || text.trim() === "") continue; // none, or QEMU is still writing it
    const pid = Number(text.trim());
    if (!Number.isInteger(pid) || pid <= 0) {
      throw new Error(`${root}/${vm}/qemu.pid holds no pid: ${JSON.stringify(text)}`);
    }
    if (await isAlive(pid)) out.set(vm, pid);
  }
  return out;
}

async function isAlive(pid: number): Promise<boolean> {
  let stat: string | null;
  try {
    stat = await readIfExists(`/proc/${pid}/stat`);
  } catch (err) {
    // A process that exits between open and read reports ESRCH: it is gone too.
    if ((err as { code?: string }).code === "ESRCH") return false;
    throw err;
  }
  if (stat === null) return false;
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
}

/** A file's text, or null when it does not exist; every other error is thrown. */
async function readIfExists(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** Entry names of a directory, or none when it does not exist; every other error is thrown. */
async function readDirNames(path: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(path)) names.push(e.name);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  return names;
}
