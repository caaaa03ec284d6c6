/**
 * A real one-voter ClusterNode on SQLite files in a temp dir, for unit tests of
 * the leader-side services (HA, drain, rebalance, migration) and the API.
 *
 * Other hosts are learners that exist only as records: they never answer Raft,
 * but the harness "hears" from them (an empty envelope through
 * {@link ClusterNode.receive}, as the /internal/raft route would deliver) so
 * the leader counts them ready. `cluster.maxVoters` is 1, so the leader never
 * promotes them and keeps its quorum of one.
 */
import { bootstrapCluster } from "../cluster/bootstrap.ts";
import { ClusterNode, delay } from "../cluster/node.ts";
import type { Inventory, OperationRecord, Role, VmRecord, VmSpec } from "../fsm/mod.ts";
import { sha256Hex } from "../secrets/mod.ts";

/** The image every test VM boots (a record only: nothing here reads the blob). */
const BLOB = { sha256: "0".repeat(64), size: 1 };

export interface HostSpec {
  cpus?: number;
  memoryMiB?: number;
  labels?: Record<string, string>;
}

export class TestCluster {
  private readonly heard = new Set<string>();
  private readonly pulse: ReturnType<typeof setInterval>;

  private constructor(
    readonly node: ClusterNode,
    readonly adminToken: string,
    readonly dataDir: string,
  ) {
    this.pulse = setInterval(() => this.hearFromHosts(), 100);
  }

  /**
   * Boots a lone voter `n1` (a registered host too) and waits until it leads.
   * @param opts.level the cluster level it starts at (default: this program's)
   */
  static async start(self: HostSpec = {}, opts: { level?: number } = {}): Promise<TestCluster> {
    const dataDir = await Deno.makeTempDir({ prefix: "novactl-unit-" });
    const { identity, adminToken } = await bootstrapCluster(
      dataDir,
      "n1",
      "http://127.0.0.1:1",
      opts.level,
    );
    const node = new ClusterNode({ dataDir, identity, tickMs: 10, onFatal: () => {} });
    node.start();
    for (let i = 0; i < 500 && !node.isLeader(); i++) await delay(10);
    if (!node.isLeader()) throw new Error("the lone voter did not become leader");
    const cluster = new TestCluster(node, adminToken, dataDir);
    await cluster.patchConfig({ "cluster.maxVoters": 1 });
    await cluster.registerHost("n1", self);
    await node.propose({
      op: "image.create",
      image: { name: "img", kind: "kernel", kernel: BLOB, sources: ["n1"] },
      by: "test",
      at: Date.now(),
    });
    return cluster;
  }

  /** Adds a member host with a TCG inventory; the leader hears from it until {@link silence}. */
  async addHost(name: string, spec: HostSpec = {}): Promise<void> {
    await this.node.changeMembership({ type: "addLearner", node: name, context: "{}" });
    await this.registerHost(name, spec);
    this.heard.add(name);
    this.hearFromHosts();
  }

  /** The leader stops hearing from the host (it turns offline after nodes.offlineAfterMs). */
  silence(name: string): void {
    this.heard.delete(name);
  }

  async patchConfig(changes: Record<string, unknown>): Promise<void> {
    await this.node.propose({ op: "config.patch", changes, by: "test", at: Date.now() });
  }

  /** An API token of the given role; returns the secret. */
  async token(role: Role): Promise<string> {
    const secret = `nva_test_${role}_${crypto.randomUUID()}`;
    await this.node.propose({
      op: "apiToken.create",
      hash: sha256Hex(secret),
      name: `${role}-token`,
      role,
      by: "test",
      at: Date.now(),
    });
    return secret;
  }

  /** Records a VM as its host would leave it: placed on `node`, in `state`. */
  async vm(
    spec: Partial<VmSpec> & { name: string; node: string },
    state: "running" | "stopped" | "failed" = "running",
    reason?: string,
  ): Promise<VmRecord> {
    await this.node.propose({ op: "vm.create", vm: vmSpec(spec), at: Date.now(), by: "test" });
    await this.observe(spec.name, spec.node, state, reason);
    return this.node.fsm.vm(spec.name)!;
  }

  /** What the VM's host would report about it. */
  async observe(name: string, node: string, state: VmRecord["state"], reason?: string) {
    await this.node.propose({ op: "vm.observed", name, node, state, reason, at: Date.now() });
  }

  /**
   * Plays the source host's migrator: finishes every running migration
   * (`vm.migrated`, then the operation succeeds) until stopped. VMs in
   * `refuse` fail their migration instead.
   */
  completeMigrations(refuse: Set<string> = new Set()): { stop(): void; seen: string[] } {
    const seen: string[] = [];
    let stopped = false;
    const loop = async () => {
      while (!stopped) {
        for (const op of this.node.fsm.operations()) {
          if (op.kind !== "migrate" || op.state !== "running" || seen.includes(op.id)) continue;
          seen.push(op.id);
          await this.finishMigration(op, !refuse.has(op.target)).catch(() => {});
        }
        await delay(20);
      }
    };
    void loop();
    return { stop: () => void (stopped = true), seen };
  }

  private async finishMigration(op: OperationRecord, succeed: boolean): Promise<void> {
    const { from, to } = op.params as { from: string; to: string };
    const at = Date.now();
    if (succeed) {
      await this.node.propose({ op: "vm.migrated", name: op.target, from, to, opId: op.id, at });
    } else {
      await this.node.propose({
        op: "vm.update",
        name: op.target,
        changes: { migration: null },
        by: "test",
        at,
      });
    }
    await this.node.propose({
      op: "operation.update",
      id: op.id,
      state: succeed ? "succeeded" : "failed",
      error: succeed ? undefined : "destination refused",
      at,
    });
  }

  /** Waits until `probe` holds (bounded: fails loudly at the deadline). */
  async until(what: string, probe: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!probe()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await delay(20);
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.pulse);
    await this.node.stop();
    await Deno.remove(this.dataDir, { recursive: true }).catch(() => {});
  }

  private async registerHost(name: string, spec: HostSpec): Promise<void> {
    await this.node.propose({
      op: "node.upsert",
      name,
      url: `http://127.0.0.1:1/${name}`,
      inventory: inventory(spec),
      labels: spec.labels ?? {},
      at: Date.now(),
    });
  }

  private hearFromHosts(): void {
    for (const from of this.heard) {
      this.node.receive({
        clusterId: this.node.identity.clusterId,
        from,
        fromUrl: `http://127.0.0.1:1/${from}`,
        messages: [],
      });
    }
  }
}

function inventory(spec: HostSpec): Inventory {
  return {
    cpus: spec.cpus ?? 8,
    memoryMiB: spec.memoryMiB ?? 8_192,
    diskGiB: 100,
    diskFreeGiB: 100,
    accel: "tcg",
    arch: "x86_64",
    kernel: "test",
    hostname: "test",
    version: "test",
  };
}

function vmSpec(spec: Partial<VmSpec> & { name: string; node: string }): VmSpec {
  return {
    uuid: crypto.randomUUID(),
    image: "img",
    cpus: 1,
    memoryMiB: 256,
    ha: false,
    labels: {},
    desired: "running",
    restartPolicy: "never",
    disks: [],
    cloudInit: null,
    template: false,
    generation: 1,
    snapshots: [],
    ...spec,
  };
}
