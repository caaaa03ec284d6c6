/**
 * The replicated state machine: applies committed Raft entries into SQLite
 * tables and records the applied index in the same transaction, so after a
 * crash every entry is applied exactly once (entries past the recorded index
 * are replayed from the Raft log or a snapshot).
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { setImmediate } from "node:timers";
import {
  ApplyFailedError,
  ConflictError,
  NotFoundError,
  NovaError,
  PrunedError,
  ValidationError,
} from "../errors/mod.ts";
import {
  type ClusterConfig,
  DEFAULT_CONFIG,
  validateConfigPatch,
  validateFullConfig,
} from "../config/mod.ts";
import type { ConfChange, ConfState, Entry } from "../raft/types.ts";
import { log } from "../log/mod.ts";
import type {
  Command,
  GuestInfo,
  ImageRecord,
  ImageSpec,
  Inventory,
  NodeState,
  OperationRecord,
  OperationSpec,
  OperationState,
  PlacementGroup,
  Role,
  VmChanges,
  VmDesired,
  VmRecord,
  VmSnapshot,
  VmSpec,
  VmState,
} from "./commands.ts";
import {
  headerLine,
  linesOfFile,
  linesOfText,
  type ParsedSnapshot,
  parseSnapshot,
  rowLine,
  SnapshotWriter,
} from "./snapshot_file.ts";
import { fsyncDir, fsyncFile } from "../store/files.ts";
import { dirname } from "node:path";
import * as certs from "./member_certs.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (name TEXT PRIMARY KEY, url TEXT NOT NULL, role TEXT NOT NULL, added_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, url TEXT NOT NULL, state TEXT NOT NULL,
  labels TEXT NOT NULL, inventory TEXT NOT NULL, joined_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS join_tokens (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  created_by TEXT NOT NULL, used_at INTEGER, used_by TEXT);
CREATE TABLE IF NOT EXISTS api_tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (name TEXT PRIMARY KEY, data TEXT NOT NULL, created_at INTEGER NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vms (name TEXT PRIMARY KEY, spec TEXT NOT NULL, node TEXT, state TEXT NOT NULL,
  reason TEXT, guest TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, data TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS operations (id TEXT PRIMARY KEY, spec TEXT NOT NULL, state TEXT NOT NULL,
  progress TEXT NOT NULL, result TEXT, error TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS config_versions (version INTEGER PRIMARY KEY, data TEXT NOT NULL, author TEXT NOT NULL,
  created_at INTEGER NOT NULL, action TEXT NOT NULL);
`;

/** Tables carried in snapshots, in restore order. */
const REPLICATED_TABLES = [
  "members",
  "nodes",
  "join_tokens",
  "api_tokens",
  "config_versions",
  "images",
  "vms",
  "groups",
  "operations",
  ...certs.MEMBER_CERT_TABLES,
] as const;

/** Outcome of one applied entry: deterministic on every node. */
export type ApplyResult = { ok: true; value: unknown } | { ok: false; error: NovaError };

export interface Member {
  name: string;
  url: string;
  role: "voter" | "learner";
}

export interface NodeRecord {
  name: string;
  url: string;
  state: NodeState;
  labels: Record<string, string>;
  inventory: Inventory | null;
  joinedAt: string;
  updatedAt: string;
}

export interface ConfigVersion {
  version: number;
  config: ClusterConfig;
  author: string;
  createdAt: string;
  action: string;
}

type Row = Record<string, unknown>;

export class StateMachine {
  /** Replaced (reopened) when a snapshot is restored from a file. */
  db: DatabaseSync;

  constructor(readonly path: string) {
    this.db = this.open();
  }

  private open(): DatabaseSync {
    const db = new DatabaseSync(this.path);
    // NORMAL is enough. In WAL mode a power loss can roll back the last commits here
    // (never corrupt: checkpoints still fsync), so the applied index may fall back. The
    // entries after it are then replayed, and they are always still there: the log only
    // drops entries (compaction, ClusterNode.maybeCompact) once a snapshot covering them
    // is durable in the log's own store (data file fsynced and renamed durably, then its
    // row in the same FULL transaction as the deletion), and on start a state machine
    // behind that snapshot is restored from it (ClusterNode.recoverStateMachine).
    db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
    db.exec(SCHEMA + certs.MEMBER_CERTS_SCHEMA);
    return db;
  }

  close(): void {
    this.db.close();
  }

  private readonly statements = new Map<string, StatementSync>();

  /** Prepared statements are cached: preparing costs more than running them. */
  private sql(text: string): StatementSync {
    let st = this.statements.get(text);
    if (!st) this.statements.set(text, st = this.db.prepare(text));
    return st;
  }

  appliedIndex(): number {
    return Number(this.metaGet("applied_index") ?? 0);
  }

  clusterId(): string | null {
    return this.metaGet("cluster_id");
  }

  private metaGet(key: string): string | null {
    const row = this.sql("SELECT value FROM meta WHERE key = ?").get(key) as
      | { value: string }
      | undefined;
    return row ? row.value : null;
  }

  private metaSet(key: string, value: string | number): void {
    this.sql("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)").run(
      key,
      String(value),
    );
  }

  /**
   * Applies a batch of committed entries in one transaction; returns a result per entry index.
   * @throws ApplyFailedError (or the SQLite error) when this node, not a command, failed:
   * nothing of the batch is kept and the applied index stays where it was.
   */
  applyEntries(entries: Entry[]): Map<number, ApplyResult> {
    const results = new Map<number, ApplyResult>();
    const applied = this.appliedIndex();
    const fresh = entries.filter((e) => e.index > applied);
    if (!fresh.length) return results;
    try {
      this.inTransaction(() => {
        for (const e of fresh) results.set(e.index, this.applyEntry(e));
        this.metaSet("applied_index", fresh[fresh.length - 1].index);
      });
    } catch (err) {
      this.touchedVms.clear();
      throw err;
    }
    this.notifyVmChanges();
    return results;
  }

  /** VMs changed by the batch being applied; listeners hear of them after it commits. */
  private readonly touchedVms = new Set<string>();

  private readonly vmListeners = new Set<(name: string | null) => void>();

  /**
   * Calls `listener` after a committed command touched a VM (its name), or
   * after a snapshot replaced the whole state (null). Hosts reconcile on it.
   */
  onVmChange(listener: (name: string | null) => void): () => void {
    this.vmListeners.add(listener);
    return () => this.vmListeners.delete(listener);
  }

  private notifyVmChanges(): void {
    const names = [...this.touchedVms];
    this.touchedVms.clear();
    for (const n of names) this.emitVmChange(n);
  }

  private noteVmTouched(cmd: Command): void {
    if (!this.vmListeners.size || !cmd.op.startsWith("vm.")) return;
    const name = cmd.op === "vm.create" ? cmd.vm.name : (cmd as { name: string }).name;
    this.touchedVms.add(name);
  }

  private emitVmChange(name: string | null): void {
    for (const l of this.vmListeners) {
      try {
        l(name);
      } catch (err) {
        console.error("vm change listener failed", err);
      }
    }
  }

  /**
   * Applies one entry inside the batch's transaction. A command the state
   * refuses yields an error result (identical on every replica); any other
   * failure throws {@link ApplyFailedError}.
   */
  private applyEntry(e: Entry): ApplyResult {
    if (e.data === "") return { ok: true, value: null };
    this.db.exec("SAVEPOINT entry");
    try {
      const cmd = JSON.parse(e.data);
      const value = e.type === "conf"
        ? this.applyConfChange(cmd as ConfChange)
        : this.applyCommand(cmd as Command);
      this.db.exec("RELEASE entry");
      if (e.type !== "conf") this.noteVmTouched(cmd as Command);
      return { ok: true, value };
    } catch (err) {
      // A rejected command changes nothing: roll back whatever it started.
      this.db.exec("ROLLBACK TO entry; RELEASE entry");
      this.currentConfig = null;
      const rejection = asRejection(err);
      if (rejection) return { ok: false, error: rejection };
      // Anything else failed here, not in the command: applyEntries rolls back the
      // whole batch, so the applied index does not move, and the caller stops the node.
      throw new ApplyFailedError(e.index, err);
    }
  }

  private inTransaction(fn: () => void): void {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      fn();
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      this.currentConfig = null;
      throw err;
    }
  }

  // ---- membership ----------------------------------------------------------

  private applyConfChange(cc: ConfChange): unknown {
    const ctx = cc.context
      ? JSON.parse(cc.context) as { url?: string; at?: number } & certs.MemberIdentitySeed
      : {};
    switch (cc.type) {
      case "addLearner":
        this.sql(
          "INSERT OR REPLACE INTO members (name, url, role, added_at) VALUES (?, ?, 'learner', ?)",
        ).run(cc.node, ctx.url ?? "", ctx.at ?? 0);
        certs.recordMemberCert(this.sqlOf, cc.node, ctx, ctx.at ?? 0);
        break;
      case "promote":
        this.sql("UPDATE members SET role = 'voter' WHERE name = ?").run(cc.node);
        break;
      case "demote":
        this.sql("UPDATE members SET role = 'learner' WHERE name = ?").run(cc.node);
        break;
      case "remove":
        this.sql("DELETE FROM members WHERE name = ?").run(cc.node);
        this.sql("DELETE FROM nodes WHERE name = ?").run(cc.node);
        certs.revokeMemberCert(this.sqlOf, cc.node, ctx.at ?? 0);
        break;
    }
    return { member: cc.node, change: cc.type };
  }

  members(): Member[] {
    return (this.sql("SELECT name, url, role FROM members ORDER BY name").all() as Row[])
      .map(
        (r) => ({ name: String(r.name), url: String(r.url), role: r.role as Member["role"] }),
      );
  }

  member(name: string): Member | null {
    return this.members().find((m) => m.name === name) ?? null;
  }

  private readonly sqlOf = (text: string) => this.sql(text);

  /** A member's recorded certificate fingerprint and credential hash (see member_certs.ts). */
  memberCert(name: string): certs.MemberCert | null {
    return certs.memberCert(this.sqlOf, name);
  }

  /** Every member's recorded identity. */
  memberCerts(): certs.MemberCert[] {
    return certs.memberCerts(this.sqlOf);
  }

  /** The name of the removed member a revoked certificate fingerprint belonged to, or null. */
  revokedCert(fingerprint: string): string | null {
    return certs.revokedCert(this.sqlOf, fingerprint);
  }

  /** The cluster CA certificate and key (only ever used by the leader to sign joins). */
  clusterCa(): { certPem: string; keyPem: string } | null {
    return certs.clusterCa(this.sqlOf);
  }

  confState(): ConfState {
    const ms = this.members();
    return {
      voters: ms.filter((m) => m.role === "voter").map((m) => m.name),
      learners: ms.filter((m) => m.role === "learner").map((m) => m.name),
    };
  }

  // ---- commands ------------------------------------------------------------

  private applyCommand(cmd: Command): unknown {
    if (cmd.op === "apiToken.create" || cmd.op === "cluster.init") this.tokenCache.clear();
    switch (cmd.op) {
      case "noop":
        return null;
      case "cluster.init":
        return this.applyInit(cmd);
      case "joinToken.create":
        this.sql(
          "INSERT INTO join_tokens (id, created_at, expires_at, created_by) VALUES (?, ?, ?, ?)",
        ).run(cmd.id, cmd.at, cmd.expiresAt, cmd.by);
        this.pruneJoinTokens(cmd.at);
        return { expiresAt: cmd.expiresAt };
      case "joinToken.consume": {
        const used = this.consumeJoinToken(cmd.id, cmd.node, cmd.at);
        this.pruneJoinTokens(cmd.at);
        return used;
      }
      case "node.upsert":
        return this.upsertNode(cmd);
      case "node.state":
        return this.setNodeState(cmd.name, cmd.state, cmd.at);
      case "node.remove":
        this.sql("DELETE FROM nodes WHERE name = ?").run(cmd.name);
        return null;
      case "config.patch":
        // Only the changed keys need validating: the rest already passed when written.
        return this.writeConfig(
          { ...this.config().config, ...validateConfigPatch(cmd.changes) },
          cmd.ifVersion,
          cmd.by,
          cmd.at,
          "set " + Object.keys(cmd.changes).join(","),
        );
      case "config.replace":
        return this.writeConfig(
          validateFullConfig(cmd.config),
          cmd.ifVersion,
          cmd.by,
          cmd.at,
          "replace",
        );
      case "config.rollback": {
        const old = this.configVersion(cmd.version);
        return this.writeConfig(
          validateFullConfig(old.config),
          cmd.ifVersion,
          cmd.by,
          cmd.at,
          `rollback to ${cmd.version}`,
        );
      }
      case "image.create":
        return this.createImage(cmd.image, cmd.by, cmd.at);
      case "image.delete":
        return this.deleteImage(cmd.name);
      case "vm.create":
        return this.createVm(cmd.vm, cmd.at);
      case "vm.desired":
        return this.setVmDesired(cmd.name, cmd.desired, cmd, cmd.at);
      case "vm.update":
        return this.updateVm(cmd.name, cmd.changes, cmd.at);
      case "vm.observed":
        return this.observeVm(cmd, cmd.at);
      case "vm.migrated":
        return this.moveVm(cmd.name, cmd.from, cmd.to, "running", null, cmd.at);
      case "vm.moved":
        return this.moveVm(cmd.name, cmd.from, cmd.to, "scheduled", cmd.reason, cmd.at);
      case "group.create":
        if (this.group(cmd.group.name)) {
          throw new ConflictError(`group "${cmd.group.name}" already exists`);
        }
        this.sql("INSERT INTO groups (name, data, created_at) VALUES (?, ?, ?)").run(
          cmd.group.name,
          JSON.stringify(cmd.group),
          cmd.at,
        );
        return cmd.group;
      case "group.delete": {
        const members = this.vms().filter((v) => v.group === cmd.name).map((v) => v.name);
        if (members.length) {
          throw new ConflictError(`group "${cmd.name}" has members: ${members.join(", ")}`);
        }
        this.sql("DELETE FROM groups WHERE name = ?").run(cmd.name);
        return { name: cmd.name, deleted: true };
      }
      case "operation.create":
        this.sql(
          "INSERT INTO operations (id, spec, state, progress, result, error, created_at, updated_at) VALUES (?, ?, 'running', '{}', NULL, NULL, ?, ?)",
        ).run(cmd.operation.id, JSON.stringify(cmd.operation), cmd.at, cmd.at);
        this.pruneOperations(cmd.at);
        return this.operation(cmd.operation.id);
      case "operation.update":
        return this.updateOperation(cmd);
      case "vm.snapshot.add":
        return this.changeSnapshots(cmd.name, cmd.node, cmd.at, (list) => {
          if (list.some((s) => s.name === cmd.snapshot.name)) {
            throw new ConflictError(`snapshot "${cmd.snapshot.name}" already exists`);
          }
          return [...list, cmd.snapshot];
        });
      case "vm.snapshot.remove":
        return this.changeSnapshots(
          cmd.name,
          cmd.node,
          cmd.at,
          (list) => list.filter((s) => s.name !== cmd.snapshot),
        );
      case "vm.remove":
        return this.removeVm(cmd.name, cmd.node);
      case "apiToken.create":
        this.sql("INSERT INTO api_tokens (hash, name, role, created_at) VALUES (?, ?, ?, ?)")
          .run(cmd.hash, cmd.name, cmd.role, cmd.at);
        return { name: cmd.name, role: cmd.role };
      default:
        throw new ValidationError(`unknown command ${(cmd as { op: string }).op}`);
    }
  }

  /** The bootstrap state of a new cluster, written into its first snapshot. */
  private applyInit(cmd: Extract<Command, { op: "cluster.init" }>): unknown {
    this.metaSet("cluster_id", cmd.clusterId);
    this.sql(
      "INSERT OR REPLACE INTO members (name, url, role, added_at) VALUES (?, ?, 'voter', ?)",
    )
      .run(cmd.member.name, cmd.member.url, cmd.at);
    certs.recordMemberCert(this.sqlOf, cmd.member.name, cmd.member, cmd.at);
    if (cmd.ca) certs.setClusterCa(this.sqlOf, cmd.ca);
    this.sql(
      "INSERT OR REPLACE INTO api_tokens (hash, name, role, created_at) VALUES (?, 'admin', 'admin', ?)",
    )
      .run(cmd.adminTokenHash, cmd.at);
    this.writeConfig(validateFullConfig(cmd.config), undefined, "system", cmd.at, "init");
    return null;
  }

  private consumeJoinToken(id: string, node: string, at: number): unknown {
    const row = this.sql("SELECT expires_at, used_at, used_by FROM join_tokens WHERE id = ?")
      .get(id) as
        | { expires_at: number; used_at: number | null; used_by: string | null }
        | undefined;
    if (!row) throw new NovaError("unauthorized", "join token is not valid for this cluster");
    if (row.used_at !== null) {
      throw new NovaError("unauthorized", `join token was already used (by ${row.used_by})`);
    }
    if (row.expires_at <= at) {
      throw new NovaError(
        "unauthorized",
        `join token expired at ${new Date(row.expires_at).toISOString()}`,
      );
    }
    if (this.member(node)) throw new ConflictError(`a member named "${node}" already exists`);
    this.sql("UPDATE join_tokens SET used_at = ?, used_by = ? WHERE id = ?").run(
      at,
      node,
      id,
    );
    return { node };
  }

  private upsertNode(cmd: Extract<Command, { op: "node.upsert" }>): unknown {
    const existing = this.node(cmd.name);
    this.sql(
      `INSERT INTO nodes (name, url, state, labels, inventory, joined_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(name) DO UPDATE SET url = excluded.url, labels = excluded.labels,
         inventory = excluded.inventory, updated_at = excluded.updated_at`,
    ).run(
      cmd.name,
      cmd.url,
      existing?.state ?? "ready",
      JSON.stringify(cmd.labels),
      JSON.stringify(cmd.inventory),
      cmd.at,
      cmd.at,
    );
    return null;
  }

  private setNodeState(name: string, state: NodeState, at: number): unknown {
    const res = this.sql("UPDATE nodes SET state = ?, updated_at = ? WHERE name = ?").run(
      state,
      at,
      name,
    );
    if (Number(res.changes) === 0) throw new NotFoundError("node", name);
    return { name, state };
  }

  nodes(): NodeRecord[] {
    return (this.sql("SELECT * FROM nodes ORDER BY name").all() as Row[]).map(toNodeRecord);
  }

  node(name: string): NodeRecord | null {
    const row = this.sql("SELECT * FROM nodes WHERE name = ?").get(name) as Row | undefined;
    return row ? toNodeRecord(row) : null;
  }

  // ---- images --------------------------------------------------------------

  private createImage(image: ImageSpec, by: string, at: number): unknown {
    if (this.image(image.name)) throw new ConflictError(`image "${image.name}" already exists`);
    this.sql("INSERT INTO images (name, data, created_at, created_by) VALUES (?, ?, ?, ?)")
      .run(image.name, JSON.stringify(image), at, by);
    return this.image(image.name);
  }

  private deleteImage(name: string): unknown {
    if (!this.image(name)) throw new NotFoundError("image", name);
    const users = this.vms().filter((v) => v.image === name).map((v) => v.name);
    if (users.length) {
      throw new ConflictError(`image "${name}" is used by VMs: ${users.join(", ")}`, {
        vms: users,
      });
    }
    this.sql("DELETE FROM images WHERE name = ?").run(name);
    return { deleted: name };
  }

  images(): ImageRecord[] {
    return (this.sql("SELECT * FROM images ORDER BY name").all() as Row[]).map(toImageRecord);
  }

  image(name: string): ImageRecord | null {
    const row = this.sql("SELECT * FROM images WHERE name = ?").get(name) as Row | undefined;
    return row ? toImageRecord(row) : null;
  }

  // ---- virtual machines ---------------------------------------------------

  private createVm(spec: VmSpec, at: number): unknown {
    if (this.vm(spec.name)) throw new ConflictError(`VM "${spec.name}" already exists`);
    if (!this.image(spec.image)) throw new NotFoundError("image", spec.image);
    const state: VmState = spec.node ? "scheduled" : "pending";
    this.sql(
      "INSERT INTO vms (name, spec, node, state, reason, created_at, updated_at) VALUES (?, ?, ?, ?, NULL, ?, ?)",
    ).run(spec.name, JSON.stringify(spec), spec.node, state, at, at);
    return this.vm(spec.name);
  }

  private setVmDesired(
    name: string,
    desired: VmDesired,
    opts: { keepDisks?: boolean; force?: boolean },
    at: number,
  ): unknown {
    const vm = this.vm(name);
    if (!vm) throw new NotFoundError("vm", name);
    if (vm.template && desired === "running") {
      throw new ConflictError(`"${name}" is a template; clone it to run it`);
    }
    if (desired === "deleted" && !vm.node) {
      this.sql("DELETE FROM vms WHERE name = ?").run(name);
      return { name, deleted: true };
    }
    const spec: VmSpec = { ...specOf(vm), desired, force: !!opts.force };
    if (desired === "deleted") spec.keepDisks = !!opts.keepDisks;
    this.writeSpec(spec, at);
    return this.vm(name);
  }

  private updateVm(name: string, changes: VmChanges, at: number): unknown {
    const vm = this.vm(name);
    if (!vm) throw new NotFoundError("vm", name);
    if (vm.desired === "deleted") throw new ConflictError(`VM "${name}" is being deleted`);
    this.writeSpec({ ...specOf(vm), ...changes }, at);
    return this.vm(name);
  }

  private writeSpec(spec: VmSpec, at: number): void {
    this.sql("UPDATE vms SET spec = ?, updated_at = ? WHERE name = ?").run(
      JSON.stringify(spec),
      at,
      spec.name,
    );
  }

  /** A host reports what it sees; reports from a host the VM is not placed on are ignored. */
  private observeVm(
    o: { name: string; node: string; state: VmState; reason?: string; guest?: GuestInfo | null },
    at: number,
  ): unknown {
    const vm = this.vm(o.name);
    if (!vm || vm.node !== o.node) return null;
    const guest = o.guest === undefined ? vm.guest : o.guest;
    this.sql("UPDATE vms SET state = ?, reason = ?, guest = ?, updated_at = ? WHERE name = ?").run(
      o.state,
      o.reason ?? null,
      guest ? JSON.stringify(guest) : null,
      at,
      o.name,
    );
    return this.vm(o.name);
  }

  /** Re-homes a VM; a no-op unless it is still where the proposer saw it (idempotent, race-safe). */
  private moveVm(
    name: string,
    from: string,
    to: string,
    state: VmState,
    reason: string | null,
    at: number,
  ): unknown {
    const vm = this.vm(name);
    if (!vm || vm.node !== from) return null;
    const spec: VmSpec = { ...specOf(vm), node: to, migration: null };
    this.sql(
      "UPDATE vms SET spec = ?, node = ?, state = ?, reason = ?, guest = NULL, updated_at = ? WHERE name = ?",
    ).run(JSON.stringify(spec), to, state, reason, at, name);
    return this.vm(name);
  }

  group(name: string): PlacementGroup | null {
    const row = this.sql("SELECT data FROM groups WHERE name = ?").get(name) as Row | undefined;
    return row ? JSON.parse(String(row.data)) : null;
  }

  groups(): PlacementGroup[] {
    return (this.sql("SELECT data FROM groups ORDER BY name").all() as Row[]).map((r) =>
      JSON.parse(String(r.data))
    );
  }

  private updateOperation(cmd: Extract<Command, { op: "operation.update" }>): unknown {
    const op = this.operation(cmd.id);
    if (!op) throw new NotFoundError("operation", cmd.id);
    if (op.state !== "running") return op; // finished operations are immutable
    this.sql(
      "UPDATE operations SET state = ?, progress = ?, result = ?, error = ?, updated_at = ? WHERE id = ?",
    ).run(
      cmd.state ?? op.state,
      JSON.stringify(cmd.progress ?? op.progress),
      cmd.result ? JSON.stringify(cmd.result) : (op.result ? JSON.stringify(op.result) : null),
      cmd.error ?? op.error,
      cmd.at,
      cmd.id,
    );
    return this.operation(cmd.id);
  }

  operation(id: string): OperationRecord | null {
    const row = this.sql("SELECT * FROM operations WHERE id = ?").get(id) as Row | undefined;
    return row ? toOperationRecord(row) : null;
  }

  operations(): OperationRecord[] {
    return (this.sql("SELECT * FROM operations ORDER BY created_at DESC LIMIT 1000").all() as Row[])
      .map(toOperationRecord);
  }

  private changeSnapshots(
    name: string,
    node: string,
    at: number,
    change: (list: VmSnapshot[]) => VmSnapshot[],
  ): unknown {
    const vm = this.vm(name);
    if (!vm) throw new NotFoundError("vm", name);
    if (vm.node !== node) throw new ConflictError(`VM "${name}" is not on ${node}`);
    this.writeSpec({ ...specOf(vm), snapshots: change(vm.snapshots) }, at);
    return this.vm(name);
  }

  private removeVm(name: string, node: string): unknown {
    const vm = this.vm(name);
    if (!vm || vm.node !== node || vm.desired !== "deleted") return null;
    this.sql("DELETE FROM vms WHERE name = ?").run(name);
    return { name, deleted: true };
  }

  vms(): VmRecord[] {
    return (this.sql("SELECT * FROM vms ORDER BY name").all() as Row[]).map(toVmRecord);
  }

  vm(name: string): VmRecord | null {
    const row = this.sql("SELECT * FROM vms WHERE name = ?").get(name) as Row | undefined;
    return row ? toVmRecord(row) : null;
  }

  // ---- tokens --------------------------------------------------------------

  /** Every API request authenticates, so known tokens are cached (cleared when tokens change). */
  private readonly tokenCache = new Map<string, { name: string; role: Role }>();

  apiTokenByHash(hash: string): { name: string; role: Role } | null {
    const cached = this.tokenCache.get(hash);
    if (cached) return cached;
    const row = this.sql("SELECT name, role FROM api_tokens WHERE hash = ?").get(hash) as
      | { name: string; role: Role }
      | undefined;
    if (!row) return null;
    const principal = { name: row.name, role: row.role };
    this.tokenCache.set(hash, principal);
    return principal;
  }

  joinTokens(): { id: string; createdAt: string; expiresAt: string; usedBy: string | null }[] {
    return (this.sql("SELECT * FROM join_tokens ORDER BY created_at").all() as Row[]).map((
      r,
    ) => ({
      id: String(r.id).slice(0, 12),
      createdAt: new Date(Number(r.created_at)).toISOString(),
      expiresAt: new Date(Number(r.expires_at)).toISOString(),
      usedBy: (r.used_by as string | null) ?? null,
    }));
  }

  // ---- configuration -------------------------------------------------------

  private writeConfig(
    config: ClusterConfig,
    ifVersion: number | undefined,
    by: string,
    at: number,
    action: string,
  ): { version: number } {
    const current = this.latestConfigVersion();
    if (ifVersion !== undefined && ifVersion !== current) {
      throw new ConflictError(
        `configuration changed: version is ${current}, request expected ${ifVersion}`,
        { currentVersion: current, expectedVersion: ifVersion },
      );
    }
    const version = current + 1;
    this.sql(
      "INSERT INTO config_versions (version, data, author, created_at, action) VALUES (?, ?, ?, ?, ?)",
    ).run(version, JSON.stringify(config), by, at, action);
    this.pruneConfigVersions(config, version, at);
    this.currentConfig = deepFreeze({
      version,
      config,
      author: by,
      createdAt: new Date(at).toISOString(),
      action,
    });
    return { version };
  }

  /** The latest version, cached: it is read on every write and by the node's loops. */
  private currentConfig: ConfigVersion | null = null;

  private latestConfigVersion(): number {
    if (this.currentConfig) return this.currentConfig.version;
    const row = this.sql("SELECT MAX(version) AS v FROM config_versions").get() as {
      v: number | null;
    };
    return row.v ?? 0;
  }

  /** The latest version; frozen, shared by every caller. */
  config(): ConfigVersion {
    if (this.currentConfig) return this.currentConfig;
    const v = this.latestConfigVersion();
    if (v === 0) throw new NotFoundError("configuration", "current");
    this.currentConfig = deepFreeze(this.configVersion(v));
    return this.currentConfig;
  }

  /** The current settings, or the defaults on a joiner that has not received any state yet. */
  settings(): ClusterConfig {
    if (this.currentConfig) return this.currentConfig.config;
    return this.latestConfigVersion() === 0 ? DEFAULT_CONFIG : this.config().config;
  }

  configVersion(version: number): ConfigVersion {
    const row = this.sql("SELECT * FROM config_versions WHERE version = ?").get(version) as
      | Row
      | undefined;
    if (row) return toConfigVersion(row);
    const kept = this.configRetention();
    if (Number.isInteger(version) && version >= 1 && version < kept.oldest) {
      throw new PrunedError(
        `configuration version ${version} was pruned: ${describeRetention(kept)}`,
        { version, ...kept },
      );
    }
    throw new NotFoundError("configuration version", String(version));
  }

  /** Which configuration versions are kept, and the settings that decide it. */
  configRetention(): ConfigRetention {
    const row = this.sql(
      "SELECT MIN(version) AS oldest, MAX(version) AS newest FROM config_versions",
    ).get() as { oldest: number | null; newest: number | null };
    const r = retentionOf(this.settings());
    return {
      keepVersions: r.configVersions,
      keepDays: r.configDays,
      oldest: row.oldest ?? 0,
      newest: row.newest ?? 0,
    };
  }

  // ---- retention -------------------------------------------------------------
  // Pruning runs inside the apply of the command that adds a row, with that
  // command's timestamp (chosen by its proposer and carried in the log), so
  // every replica removes exactly the same rows. No local clock is read.

  /** Keeps the newest config.keepVersions versions, none older than config.keepDays but the current. */
  private pruneConfigVersions(config: ClusterConfig, current: number, at: number): void {
    const r = retentionOf(config);
    const cutoff = r.configDays > 0 ? at - r.configDays * DAY_MS : Number.MIN_SAFE_INTEGER;
    this.sql(
      "DELETE FROM config_versions WHERE version < ? AND (version <= ? OR created_at < ?)",
    ).run(current, current - r.configVersions, cutoff);
  }

  /** Finished operations beyond operations.keepCount, or older than operations.keepDays, go. */
  private pruneOperations(at: number): void {
    const r = retentionOf(this.settings());
    const cutoff = r.operationDays > 0 ? at - r.operationDays * DAY_MS : Number.MIN_SAFE_INTEGER;
    this.sql(
      `DELETE FROM operations WHERE state != 'running' AND (updated_at < ? OR id IN (
         SELECT id FROM operations WHERE state != 'running'
         ORDER BY updated_at DESC, id DESC LIMIT -1 OFFSET ?))`,
    ).run(cutoff, r.operationCount);
  }

  /** Used or expired join tokens are kept joinTokens.keepDays after their use or expiry. */
  private pruneJoinTokens(at: number): void {
    const cutoff = at - retentionOf(this.settings()).joinTokenDays * DAY_MS;
    this.sql(
      "DELETE FROM join_tokens WHERE (used_at IS NOT NULL AND used_at < ?) OR (used_at IS NULL AND expires_at < ?)",
    ).run(cutoff, cutoff);
  }

  configHistory(limit = 100): ConfigVersion[] {
    return (this.sql("SELECT * FROM config_versions ORDER BY version DESC LIMIT ?").all(
      limit,
    ) as Row[])
      .map(toConfigVersion);
  }

  // ---- snapshots -----------------------------------------------------------

  /** Serializes the replicated tables in memory (bootstrap and tests; nodes use snapshotToFile). */
  snapshotData(): string {
    const parts = [headerLine(this.clusterId())];
    for (const t of REPLICATED_TABLES) {
      for (const row of this.sql(`SELECT * FROM ${t}`).all() as Row[]) parts.push(rowLine(t, row));
    }
    return parts.join("");
  }

  /**
   * Writes a snapshot to `path` without stalling the caller's event loop or
   * holding it in memory: a second connection holds a WAL read transaction
   * (a consistent view at one applied index) while the tables are written
   * out in pages, and applying goes on. The file is not fsynced here.
   */
  async snapshotToFile(path: string): Promise<{ index: number; conf: ConfState; bytes: number }> {
    const reader = new DatabaseSync(this.path, { readOnly: true });
    const file = await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      reader.exec("BEGIN");
      const meta = (key: string) =>
        (reader.prepare("SELECT value FROM meta WHERE key = ?").get(key) as
          | { value: string }
          | undefined)
          ?.value ?? null;
      const index = Number(meta("applied_index") ?? 0);
      const members = reader.prepare("SELECT name, role FROM members ORDER BY name").all() as Row[];
      const conf: ConfState = {
        voters: members.filter((m) => m.role === "voter").map((m) => String(m.name)),
        learners: members.filter((m) => m.role === "learner").map((m) => String(m.name)),
      };
      const out = new SnapshotWriter(file);
      await out.add(headerLine(meta("cluster_id")));
      for (const t of REPLICATED_TABLES) {
        const page = reader.prepare(
          `SELECT rowid AS __rowid, * FROM ${t} WHERE rowid > ? ORDER BY rowid LIMIT 2000`,
        );
        let after = Number.MIN_SAFE_INTEGER;
        for (;;) {
          const batch = page.all(after) as Row[];
          if (!batch.length) break;
          after = Number(batch[batch.length - 1].__rowid);
          for (const row of batch) {
            delete row.__rowid;
            await out.add(rowLine(t, row));
          }
          await new Promise((r) => setImmediate(r));
        }
      }
      await out.flush();
      reader.exec("COMMIT");
      return { index, conf, bytes: out.bytes };
    } finally {
      file.close();
      reader.close();
    }
  }

  /** Replaces the whole state with an in-memory snapshot taken at `index` (tests, legacy). */
  restore(data: string, index: number): void {
    this.restoreInPlace(parseSnapshot(linesOfText(data), RESTORE_BATCH_ROWS), index);
  }

  /**
   * Replaces the whole state with the snapshot file at `path`, taken at
   * `index`, at startup: synchronous, but streamed (one batch of rows in
   * memory at a time).
   */
  restoreFromFileSync(path: string, index: number): void {
    this.restoreInPlace(parseSnapshot(linesOfFile(path), RESTORE_BATCH_ROWS), index);
  }

  /**
   * Replaces the whole state with the snapshot file at `path` while the node
   * keeps running: rows are loaded in batches into a fresh database file,
   * yielding to the event loop between batches (ticks, HTTP and reads of the
   * old state go on), which then replaces this one in a single rename.
   */
  async restoreFromFile(
    path: string,
    index: number,
    opts: { batchRows?: number; onBatch?: () => void } = {},
  ): Promise<void> {
    const scratch = `${this.path}.restore`;
    removeDatabaseFiles(scratch);
    const fresh = new DatabaseSync(scratch);
    try {
      // A crash leaves only a scratch file, removed on the next attempt: no journal needed.
      fresh.exec("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;");
      fresh.exec(SCHEMA + certs.MEMBER_CERTS_SCHEMA);
      fresh.exec("BEGIN");
      const snap = parseSnapshot(linesOfFile(path), opts.batchRows ?? RESTORE_BATCH_ROWS);
      for (const batch of snap.batches) {
        for (const [t, row] of batch) insertRow(fresh, t, row);
        opts.onBatch?.();
        await new Promise((r) => setImmediate(r));
      }
      const setMeta = fresh.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)");
      if (snap.clusterId) setMeta.run("cluster_id", snap.clusterId);
      setMeta.run("applied_index", String(index));
      fresh.exec("COMMIT");
    } finally {
      fresh.close();
    }
    await this.swapDatabase(scratch);
    this.emitVmChange(null);
  }

  /**
   * Puts the database file `replacement` in place of ours and reopens. The
   * close-rename-open step is synchronous: nothing may run while no database
   * is open. If the rename is lost in a crash, the old file (with its older
   * applied index) is found and the node restores the snapshot again.
   */
  private async swapDatabase(replacement: string): Promise<void> {
    await fsyncFile(replacement);
    this.statements.clear();
    this.currentConfig = null;
    this.tokenCache.clear();
    // Closing checkpoints the WAL into the file; a stale -wal must never meet the new file.
    this.db.close();
    try {
      removeDatabaseFiles(this.path, ["-wal", "-shm"]);
      Deno.renameSync(replacement, this.path);
    } finally {
      this.db = this.open();
    }
    await fsyncDir(dirname(this.path));
  }

  private restoreInPlace(snap: ParsedSnapshot, index: number): void {
    this.currentConfig = null;
    this.tokenCache.clear();
    this.inTransaction(() => {
      for (const t of REPLICATED_TABLES) this.db.exec(`DELETE FROM ${t}`);
      for (const batch of snap.batches) {
        for (const [t, row] of batch) insertRow(this.db, t, row);
      }
      if (snap.clusterId) this.metaSet("cluster_id", snap.clusterId);
      this.metaSet("applied_index", index);
    });
    this.emitVmChange(null);
  }
}

/** Rows per batch when restoring: bounds memory and the time between event-loop turns. */
const RESTORE_BATCH_ROWS = 500;

const COLUMN_NAME = /^[a-z_][a-z0-9_]*$/;

/** Prepared INSERTs per connection: a restore inserts many rows of few shapes. */
const insertStatements = new WeakMap<DatabaseSync, Map<string, StatementSync>>();

/** Inserts one snapshot row; table and column names are checked, as the file came from a peer. */
function insertRow(db: DatabaseSync, table: string, row: Row): void {
  if (!(REPLICATED_TABLES as readonly string[]).includes(table)) {
    throw new Error(`snapshot names an unknown table "${table}"`);
  }
  const cols = Object.keys(row);
  const bad = cols.find((c) => !COLUMN_NAME.test(c));
  if (bad) throw new Error(`snapshot names an invalid column "${bad}"`);
  const sql = `INSERT INTO ${table} (${cols.join(", ")}) VALUES (${
    cols.map(() => "?").join(", ")
  })`;
  let cache = insertStatements.get(db);
  if (!cache) insertStatements.set(db, cache = new Map());
  let st = cache.get(sql);
  if (!st) cache.set(sql, st = db.prepare(sql));
  st.run(...(cols.map((c) => row[c]) as (string | number | null)[]));
}

function removeDatabaseFiles(path: string, suffixes = ["", "-journal", "-wal", "-shm"]): void {
  for (const s of suffixes) {
    try {
      Deno.removeSync(path + s);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
}

const DAY_MS = 86_400_000;

/** Which configuration versions are kept. */
export interface ConfigRetention {
  keepVersions: number;
  keepDays: number;
  /** Oldest and newest version still stored. */
  oldest: number;
  newest: number;
}

/** E.g. "config.keepVersions=1000 keeps versions 1201–2200". */
export function describeRetention(r: ConfigRetention): string {
  const rules = [`config.keepVersions=${r.keepVersions}`];
  if (r.keepDays > 0) rules.push(`config.keepDays=${r.keepDays}`);
  return `${rules.join(" and ")} keep${
    rules.length === 1 ? "s" : ""
  } versions ${r.oldest}–${r.newest}`;
}

/** Retention settings; versions written before they existed lack them, so defaults fill in. */
function retentionOf(config: Partial<ClusterConfig>) {
  const get = <K extends keyof ClusterConfig>(k: K) => config[k] ?? DEFAULT_CONFIG[k];
  return {
    configVersions: get("config.keepVersions"),
    configDays: get("config.keepDays"),
    operationCount: get("operations.keepCount"),
    operationDays: get("operations.keepDays"),
    joinTokenDays: get("joinTokens.keepDays"),
  };
}

/** A command whose shape the appliers do not expect (missing fields, bad JSON). */
function isMalformedCommand(err: unknown): boolean {
  return err instanceof TypeError || err instanceof SyntaxError || err instanceof RangeError;
}

/** SQLite's primary result code for a violated constraint (UNIQUE, NOT NULL, CHECK). */
const SQLITE_CONSTRAINT = 19;

/**
 * The deterministic outcomes of applying a command: errors the appliers throw
 * on purpose, and constraint violations, which depend only on the replicated
 * state and the command. Everything else (I/O, a full disk, a read-only or
 * corrupted database) is this node's own failure: null.
 */
function asRejection(err: unknown): NovaError | null {
  if (err instanceof NovaError) return err;
  if (isMalformedCommand(err)) {
    // Same code, same bytes: every replica fails the same way. Stopping here would
    // let one malformed proposal stop every replica of the cluster at once.
    log.error("malformed command rejected while applying", { error: String(err) });
    return new ValidationError(`malformed command: ${(err as Error).message}`);
  }
  const sqlite = err as { code?: unknown; errcode?: unknown };
  if (
    sqlite?.code === "ERR_SQLITE_ERROR" && typeof sqlite.errcode === "number" &&
    (sqlite.errcode & 0xff) === SQLITE_CONSTRAINT
  ) {
    return new ConflictError((err as Error).message);
  }
  return null;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object" && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

function toVmRecord(r: Row): VmRecord {
  return {
    ...(JSON.parse(String(r.spec)) as VmSpec),
    node: (r.node as string | null) ?? null,
    state: r.state as VmState,
    reason: (r.reason as string | null) ?? null,
    guest: r.guest ? JSON.parse(String(r.guest)) : null,
    createdAt: new Date(Number(r.created_at)).toISOString(),
    updatedAt: new Date(Number(r.updated_at)).toISOString(),
  };
}

function toOperationRecord(r: Row): OperationRecord {
  return {
    ...(JSON.parse(String(r.spec)) as OperationSpec),
    state: r.state as OperationState,
    progress: JSON.parse(String(r.progress)),
    result: r.result ? JSON.parse(String(r.result)) : null,
    error: (r.error as string | null) ?? null,
    createdAt: new Date(Number(r.created_at)).toISOString(),
    updatedAt: new Date(Number(r.updated_at)).toISOString(),
  };
}

function specOf(vm: VmRecord): VmSpec {
  const { state: _s, reason: _r, guest: _g, createdAt: _c, updatedAt: _u, ...spec } = vm;
  return spec;
}

function toImageRecord(r: Row): ImageRecord {
  return {
    ...(JSON.parse(String(r.data)) as ImageSpec),
    createdAt: new Date(Number(r.created_at)).toISOString(),
    createdBy: String(r.created_by),
  };
}

function toNodeRecord(r: Row): NodeRecord {
  return {
    name: String(r.name),
    url: String(r.url),
    state: r.state as NodeState,
    labels: JSON.parse(String(r.labels)),
    inventory: JSON.parse(String(r.inventory)),
    joinedAt: new Date(Number(r.joined_at)).toISOString(),
    updatedAt: new Date(Number(r.updated_at)).toISOString(),
  };
}

function toConfigVersion(r: Row): ConfigVersion {
  return {
    version: Number(r.version),
    config: JSON.parse(String(r.data)),
    author: String(r.author),
    createdAt: new Date(Number(r.created_at)).toISOString(),
    action: String(r.action),
  };
}
