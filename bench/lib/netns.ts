/**
 * A small network of Linux network namespaces for multi-process tests, so faults are
 * injected by the kernel's network stack instead of by the program under test:
 *
 * ```text
 *   root namespace (the test process, 10.77.S.1) ── veth ──┐
 *   namespace nvlab-<run>-n1 (eth0 10.77.S.11)  ── veth ──┤ bridge br0 in
 *   namespace nvlab-<run>-n2 (eth0 10.77.S.12)  ── veth ──┤ nvlab-<run>-hub
 *   ...                                                   ┘
 * ```
 *
 * Every node has its own namespace and address; all of them listen on `NODE_PORT`.
 * Links are cut on the bridge by one nftables table (bridge family, forward hook) in
 * the hub namespace, or by setting a node's bridge port down. The test process stays
 * in the root namespace, reaches every node through the bridge, and is never cut off
 * by `cut`/`partition` (only by `setLink(name, false)`).
 *
 * Names carry the creating process's pid, so `sweepStale()` can remove what crashed
 * runs left behind without touching a run that is still going. Needs root, iproute2
 * and nftables (scripts/setup.sh installs them).
 *
 * ```ts
 * await NetworkLab.sweepStale();
 * const lab = await NetworkLab.create();
 * try {
 *   const cluster = new NovactlCluster({ network: lab });
 *   await cluster.start(3);
 *   await lab.cut("n1", "n2"); // n1's requests to n2 are lost; n2 still reaches n1
 * } finally {
 *   await cluster.stop();
 *   await lab.destroy();
 * }
 * ```
 */
import { ensureReceiveBufferDefault } from "../../host/ovs/socket_buffers.ts";

/** Port every namespaced node listens on: each namespace has its own port space. */
export const NODE_PORT = 7070;

const NAME_PREFIX = "nvlab";
const NETNS_PATTERN = /^nvlab-(\d+)x\d+-/;
/** Root-side veth: `nvl<pid>x<k>` stays within the kernel's 15-character limit. */
const ROOT_LINK_PATTERN = /^nvl(\d+)x\d+$/;
const NFT_TABLE = "novactl_nemesis";
const BRIDGE = "br0";

/** Where a node runs when it is put in a namespace. */
export interface NodeAttachment {
  /** Network namespace to run the node in (`ip netns exec NAMESPACE ...`). */
  namespace: string;
  /** `host:port` for `--listen`. */
  listen: string;
}

/** Gives each node its own place in a network (see `NovactlClusterOptions.network`). */
export interface NodeNetwork {
  attach(name: string): Promise<NodeAttachment>;
}

interface LabNode {
  namespace: string;
  address: string;
  /** The node's port on the hub bridge. */
  bridgePort: string;
}

let labsCreated = 0;

export class NetworkLab implements NodeNetwork {
  readonly #run: string;
  readonly #subnet: string;
  readonly #nodes = new Map<string, LabNode>();
  /** Directed cuts as `from\u0000to`. */
  readonly #cuts = new Set<string>();
  readonly #down = new Set<string>();
  #destroyed = false;
  readonly #txChecksumOff: boolean;

  private constructor(run: string, subnet: string, txChecksumOff: boolean) {
    this.#run = run;
    this.#subnet = subnet;
    this.#txChecksumOff = txChecksumOff;
  }

  /**
   * Creates the hub namespace with its bridge and the test process's link to it.
   * `txChecksumOff`: every veth that sends towards a node computes checksums itself,
   * for nodes whose interface feeds Open vSwitch's userspace datapath (it forwards
   * packets with unfinished checksums as they are; needs ethtool).
   */
  static async create(opts: { txChecksumOff?: boolean } = {}): Promise<NetworkLab> {
    const run = `${Deno.pid}x${++labsCreated}`;
    const lab = new NetworkLab(run, await freeSubnet(), opts.txChecksumOff ?? false);
    // Nodes raise the packet sockets' default receive buffer for OVS's userspace datapath
    // (host/ovs/socket_buffers.ts), but in a namespace the setting is the machine's and
    // read-only: the lab sets it once for the machine, as each real host's node does.
    if (opts.txChecksumOff) await ensureReceiveBufferDefault();
    try {
      await lab.#createHub();
    } catch (error) {
      await lab.destroy();
      throw error;
    }
    return lab;
  }

  /** Address of the test process on the lab network. */
  get clientAddress(): string {
    return `${this.#subnet}.1`;
  }

  get hubNamespace(): string {
    return `${NAME_PREFIX}-${this.#run}-hub`;
  }

  /** Creates `name`'s namespace and plugs it into the bridge (once per name). */
  async attach(name: string): Promise<NodeAttachment> {
    const existing = this.#nodes.get(name);
    if (existing) return { namespace: existing.namespace, listen: listenOf(existing) };
    const index = this.#nodes.size + 1;
    if (index > 200) throw new Error("a lab holds at most 200 nodes");
    const node: LabNode = {
      namespace: `${NAME_PREFIX}-${this.#run}-${name}`,
      address: `${this.#subnet}.${10 + index}`,
      bridgePort: `p${index}`,
    };
    this.#nodes.set(name, node);
    await this.#createNodeNamespace(node);
    return { namespace: node.namespace, listen: listenOf(node) };
  }

  address(name: string): string {
    return this.#node(name).address;
  }

  namespace(name: string): string {
    return this.#node(name).namespace;
  }

  /** Pids of every process running in `name`'s namespace (its node, QEMU, OVS/OVN daemons). */
  async pids(name: string): Promise<number[]> {
    const out = await ip(["netns", "pids", this.#node(name).namespace]).catch(() => "");
    return out.split("\n").map(Number).filter((p) => p > 0);
  }

  /**
   * SIGKILLs everything that runs in `name`'s namespace, as a host losing power, and waits
   * until nothing is left there; the namespace and its links stay (nothing answers on them).
   */
  async killAll(name: string): Promise<void> {
    for (let round = 0; round < 50; round++) {
      const pids = await this.pids(name);
      if (pids.length === 0) return;
      for (const pid of pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone already */ }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`processes still run in ${name}'s namespace: ${await this.pids(name)}`);
  }

  /**
   * From now on every packet `from` sends to `to`'s node port is dropped on the bridge:
   * `from`'s requests to `to` (Raft messages, forwarded client requests) are lost,
   * including those on connections opened before the cut, while `to`'s requests to
   * `from` and their answers still flow. Cutting both directions separates the two.
   */
  async cut(from: string, to: string): Promise<void> {
    this.#node(from);
    this.#node(to);
    this.#cuts.add(`${from}\u0000${to}`);
    await this.#applyRules();
  }

  /** Cuts both directions between every pair of nodes in different groups. */
  async partition(...groups: string[][]): Promise<void> {
    for (const [i, group] of groups.entries()) {
      for (const other of groups.slice(i + 1)) {
        for (const a of group) {
          for (const b of other) {
            this.#node(a);
            this.#node(b);
            this.#cuts.add(`${a}\u0000${b}`).add(`${b}\u0000${a}`);
          }
        }
      }
    }
    await this.#applyRules();
  }

  /** Sets the node's bridge port down (the node loses every link, the test's too) or up. */
  async setLink(name: string, up: boolean): Promise<void> {
    await ip([
      "-n",
      this.hubNamespace,
      "link",
      "set",
      this.#node(name).bridgePort,
      up ? "up" : "down",
    ]);
    if (up) this.#down.delete(name);
    else this.#down.add(name);
  }

  /** Removes every cut and brings every link back up. */
  async heal(): Promise<void> {
    this.#cuts.clear();
    await this.#applyRules();
    for (const name of [...this.#down]) await this.setLink(name, true);
  }

  /** The faults in force, e.g. `["n1->n2", "n3 down"]`, for logs. */
  describeFaults(): string[] {
    const cuts = [...this.#cuts].map((key) => key.replace("\u0000", "->"));
    return [...cuts, ...[...this.#down].map((name) => `${name} down`)];
  }

  /**
   * Kills whatever still runs in the lab's namespaces (processes this run started) and
   * deletes the namespaces and the root-side link. Safe to call twice.
   */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    const namespaces = [...[...this.#nodes.values()].map((n) => n.namespace), this.hubNamespace];
    for (const namespace of namespaces) await removeNamespace(namespace);
    await ip(["link", "del", this.#rootLink]).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }

  /**
   * Removes namespaces and links left by earlier runs whose process is gone (a test
   * killed before its `finally` ran), including the processes still inside them.
   */
  static async sweepStale(): Promise<string[]> {
    const removed: string[] = [];
    for (const namespace of await listNamespaces()) {
      const owner = NETNS_PATTERN.exec(namespace)?.[1];
      if (!owner || processExists(Number(owner))) continue;
      await removeNamespace(namespace);
      removed.push(namespace);
    }
    for (const link of await listRootLinks()) {
      const owner = ROOT_LINK_PATTERN.exec(link)?.[1];
      if (!owner || processExists(Number(owner))) continue;
      await ip(["link", "del", link]).catch(() => {});
      removed.push(link);
    }
    return removed;
  }

  get #rootLink(): string {
    return `nvl${this.#run}`;
  }

  #node(name: string): LabNode {
    const node = this.#nodes.get(name);
    if (!node) throw new Error(`${name} is not attached to the lab`);
    return node;
  }

  async #createHub(): Promise<void> {
    const hub = this.hubNamespace;
    await ip(["netns", "add", hub]);
    await ip(["-n", hub, "link", "add", BRIDGE, "type", "bridge"]);
    await ip(["-n", hub, "link", "set", BRIDGE, "up"]);
    await ip([
      "link",
      "add",
      this.#rootLink,
      "type",
      "veth",
      "peer",
      "name",
      "client",
      "netns",
      hub,
    ]);
    await ip(["-n", hub, "link", "set", "client", "master", BRIDGE, "up"]);
    await ip(["addr", "add", `${this.clientAddress}/24`, "dev", this.#rootLink]);
    await ip(["link", "set", this.#rootLink, "up"]);
    if (this.#txChecksumOff) await run("ethtool", ["-K", this.#rootLink, "tx", "off"]);
    await this.#applyRules();
  }

  async #createNodeNamespace(node: LabNode): Promise<void> {
    const hub = this.hubNamespace;
    await ip(["netns", "add", node.namespace]);
    await ip(["-n", node.namespace, "link", "set", "lo", "up"]);
    await ip([
      ...["-n", hub, "link", "add", node.bridgePort, "type", "veth"],
      ...["peer", "name", "eth0", "netns", node.namespace],
    ]);
    await ip(["-n", hub, "link", "set", node.bridgePort, "master", BRIDGE, "up"]);
    await ip(["-n", node.namespace, "addr", "add", `${node.address}/24`, "dev", "eth0"]);
    await ip(["-n", node.namespace, "link", "set", "eth0", "up"]);
    if (this.#txChecksumOff) {
      await run("ip", ["netns", "exec", hub, "ethtool", "-K", node.bridgePort, "tx", "off"]);
      await run("ip", ["netns", "exec", node.namespace, "ethtool", "-K", "eth0", "tx", "off"]);
    }
  }

  /** Replaces the whole rule table in one nft transaction, so no half-applied state exists. */
  async #applyRules(): Promise<void> {
    const drops = [...this.#cuts].map((key) => {
      const [from, to] = key.split("\u0000");
      const [a, b] = [this.#node(from).address, this.#node(to).address];
      return `    ip saddr ${a} ip daddr ${b} tcp dport ${NODE_PORT} drop`;
    });
    const ruleset = [
      `table bridge ${NFT_TABLE}`,
      `delete table bridge ${NFT_TABLE}`,
      `table bridge ${NFT_TABLE} {`,
      "  chain links {",
      "    type filter hook forward priority 0; policy accept;",
      ...drops,
      "  }",
      "}",
    ].join("\n");
    await run("ip", ["netns", "exec", this.hubNamespace, "nft", "-f", "-"], ruleset);
  }
}

function listenOf(node: LabNode): string {
  return `${node.address}:${NODE_PORT}`;
}

/** A 10.77.S prefix no interface of the root namespace uses yet. */
async function freeSubnet(): Promise<string> {
  const used = new Set(
    [...(await ip(["-4", "-o", "addr", "show"])).matchAll(/inet 10\.77\.(\d+)\./g)].map((m) =>
      Number(m[1])
    ),
  );
  const start = (Deno.pid + labsCreated) % 250;
  for (let i = 0; i < 250; i++) {
    const octet = 1 + (start + i) % 250;
    if (!used.has(octet)) return `10.77.${octet}`;
  }
  throw new Error("no free 10.77.S.0/24 subnet");
}

async function listNamespaces(): Promise<string[]> {
  const out = await ip(["netns", "list"]);
  return out.split("\n").map((line) => line.split(" ")[0]).filter(Boolean);
}

async function listRootLinks(): Promise<string[]> {
  const out = await ip(["-o", "link", "show"]);
  return [...out.matchAll(/^\d+: ([^:@]+)[:@]/gm)].map((m) => m[1]);
}

/** SIGKILLs the processes inside a namespace, then deletes it (missing ones are fine). */
async function removeNamespace(namespace: string): Promise<void> {
  const pids = await ip(["netns", "pids", namespace]).catch(() => "");
  for (const pid of pids.split("\n").map(Number).filter((p) => p > 0)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* already gone */ }
  }
  await ip(["netns", "del", namespace]).catch(() => {});
}

function processExists(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function ip(args: string[]): Promise<string> {
  return run("ip", args);
}

async function run(command: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  if (!output.success) {
    throw new Error(`${command} ${args.join(" ")} failed: ${decode(output.stderr).trim()}`);
  }
  return decode(output.stdout);
}
