/**
 * The replicated state machine: applies committed Raft entries into SQLite
 * tables and records the applied index in the same transaction, so after a
 * crash every entry is applied exactly once (entries past the recorded index
 * are replayed from the Raft log or a snapshot).
 *
 * This file keeps the transactions, the applied index, the dispatch of
 * commands to their appliers (resources.ts) and snapshots. Each resource's
 * tables, reads and appliers live in its own module (vms.ts, nodes.ts, ...);
 * the read methods here are the public face callers use.
 */
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { setImmediate } from "node:timers";
import { ApplyFailedError, ConflictError, NovaError, ValidationError } from "../errors/mod.ts";
import type { ClusterConfig } from "../config/mod.ts";
import type { ConfChange, ConfState, Entry } from "../raft/types.ts";
import { log } from "../log/mod.ts";
import type {
  Command,
  ImageRecord,
  OperationRecord,
  PlacementGroup,
  VmRecord,
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
import { type Applied, type Changed, type Row, Store } from "./store.ts";
import { APPLIERS, RESOURCES, SCHEMA, TABLE_NAMES, TABLES } from "./resources.ts";
import * as cluster from "./cluster.ts";
import * as clusterLevel from "./cluster_level.ts";
import * as nodeMeta from "./node_meta.ts";
import * as config from "./config.ts";
import * as groups from "./groups.ts";
import * as networks from "./networks.ts";
import * as securityGroups from "./security_groups.ts";
import * as routers from "./routers.ts";
import * as pools from "./pools.ts";
import * as volumes from "./volumes.ts";
import * as backups from "./backups.ts";
import * as alerts from "./alerts.ts";
import * as bridgeMappings from "./bridge_mappings.ts";
import * as images from "./images.ts";
import * as joinTokens from "./join_tokens.ts";
import * as members from "./members.ts";
import * as certs from "./member_certs.ts";
import * as nodes from "./nodes.ts";
import * as operations from "./operations.ts";
import * as tokens from "./tokens.ts";
import * as vms from "./vms.ts";
import * as audit from "./audit.ts";
import * as placementCheck from "./placement_check.ts";
import * as eventLog from "../events/log.ts";
import { type Before, beforeOf, confEvents, type EventDraft, eventsOf } from "../events/derive.ts";

export type { Member } from "./members.ts";
export type { LevelReached } from "./cluster_level.ts";
export type { NodeRecord } from "./nodes.ts";
export type { ConfigRetention, ConfigVersion } from "./config.ts";
export { describeRetention } from "./config.ts";
export type { Principal, TokenCheck, TokenView } from "./tokens.ts";
export { BOOTSTRAP_TOKEN_NAME, ROLES, TOKEN_NAME, TOKEN_NAME_RULE } from "./tokens.ts";
export type { JoinTokenView } from "./join_tokens.ts";
export type { Applied, Changed } from "./store.ts";
export type { VmQuery } from "./vms.ts";
export type { NetworkRecord } from "./networks.ts";
export type {
  SecurityGroupMember,
  SecurityGroupReads,
  SecurityGroupRecord,
  SecurityGroupRule,
} from "./security_groups.ts";
export type { FloatingIpRecord, RouterReads, RouterRecord } from "./routers.ts";
export type { PoolReads, PoolRecord, PoolView } from "./pools.ts";
export type { VolumeReads, VolumeRecord } from "./volumes.ts";
export type {
  BackupDiskRecord,
  BackupReads,
  BackupRecord,
  BackupScheduleRecord,
  BackupTargetRecord,
} from "./backups.ts";
export type {
  AlertChange,
  AlertReads,
  AlertRecord,
  AlertRuleRecord,
  AlertRuleSpec,
} from "./alerts.ts";

/** Outcome of one applied entry: deterministic on every node. */
export type ApplyResult = { ok: true; value: unknown } | { ok: false; error: NovaError };

export class StateMachine {
  /** Replaced (reopened) when a snapshot is restored from a file. */
  db: DatabaseSync;
  /** What the resource modules read and write through. */
  readonly #store: Store;

  /** Security groups, their rules and members (core/fsm/security_groups.ts). */
  readonly securityGroups: securityGroups.SecurityGroupReads;
  /** Routers and floating IPs (core/fsm/routers.ts). */
  readonly routers: routers.RouterReads;
  /** Storage pools, built-in and created (core/fsm/pools.ts). */
  readonly pools: pools.PoolReads;
  /** Volumes (core/fsm/volumes.ts). */
  readonly volumes: volumes.VolumeReads;
  /** Backup targets, backups and schedules (core/fsm/backups.ts). */
  readonly backups: backups.BackupReads;
  /** Alert rules and the alerts they raised (core/fsm/alerts.ts). */
  readonly alerts: alerts.AlertReads;
  /** The event log derived from applied entries (core/events/). */
  readonly events: eventLog.EventReads;

  constructor(readonly path: string) {
    this.db = this.open();
    this.#store = new Store(this.db);
    this.securityGroups = securityGroups.readsOf(this.#store);
    this.routers = routers.readsOf(this.#store);
    this.pools = pools.readsOf(this.#store);
    this.volumes = volumes.readsOf(this.#store);
    this.backups = backups.readsOf(this.#store);
    this.alerts = alerts.readsOf(this.#store);
    this.events = eventLog.readsOf(this.#store);
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
    db.exec(SCHEMA);
    for (const r of RESOURCES) r.migrate?.(db);
    return db;
  }

  /** Set by {@link close}: readers of the event log stop. */
  #closed = false;

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.db.close();
    this.#closed = true;
    this.notifyEvents(true); // readers of the event log wake up, see it closed and end
  }

  appliedIndex(): number {
    return Number(this.#store.metaGet("applied_index") ?? 0);
  }

  clusterId(): string | null {
    return cluster.clusterId(this.#store);
  }

  /** The cluster level (core/fsm/cluster_level.ts): 1 until a `cluster.upgrade` raised it. */
  clusterLevel(): number {
    return clusterLevel.level(this.#store);
  }

  /** Every level the cluster reached above 1, oldest first. */
  clusterLevels(): clusterLevel.LevelReached[] {
    return clusterLevel.history(this.#store);
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
        this.#store.metaSet("applied_index", fresh[fresh.length - 1].index);
      });
    } catch (err) {
      this.changes.clear();
      this.#eventsMade = false;
      throw err;
    }
    this.notifyChanges();
    this.notifyEvents();
    return results;
  }

  /** What the batch being applied changed; listeners hear of it after it commits. */
  private readonly changes = new Map<string, Changed>();

  private readonly listeners = new Set<(changed: Changed | null) => void>();

  /**
   * Calls `listener` after a committed command changed part of the state
   * (what, as its applier named it), or after a snapshot replaced the whole
   * state (null).
   */
  onChange(listener: (changed: Changed | null) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Calls `listener` after a committed command touched a VM (its name), or
   * after a snapshot replaced the whole state (null). Hosts reconcile on it.
   */
  onVmChange(listener: (name: string | null) => void): () => void {
    return this.onChange((c) => {
      if (c === null) listener(null);
      else if (c.resource === "vm" && c.name !== undefined) listener(c.name);
    });
  }

  /** Whether the batch being applied made events. */
  #eventsMade = false;
  readonly #eventListeners = new Set<() => void>();

  /**
   * Calls `listener` after a committed batch made events (read them from
   * {@link events}), or after a snapshot replaced the whole state (and with
   * it the event log).
   */
  onEvents(listener: () => void): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  /** How many event listeners are registered (tests check that streams leave none behind). */
  eventListenerCount(): number {
    return this.#eventListeners.size;
  }

  private notifyEvents(force = false): void {
    if (!this.#eventsMade && !force) return;
    this.#eventsMade = false;
    for (const l of [...this.#eventListeners]) {
      try {
        l();
      } catch (err) {
        console.error("event listener failed", err);
      }
    }
  }

  private notifyChanges(): void {
    const list = [...this.changes.values()];
    this.changes.clear();
    for (const c of list) this.emit(c);
  }

  private noteChanges(a: Applied): void {
    if (!this.listeners.size) return;
    for (const c of a.changed) this.changes.set(`${c.resource}\0${c.name ?? ""}`, c);
  }

  private emit(changed: Changed | null): void {
    for (const l of this.listeners) {
      try {
        l(changed);
      } catch (err) {
        console.error("state change listener failed", err);
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
    this.#store.entryIndex = e.index;
    try {
      const cmd = JSON.parse(e.data);
      let out: Applied;
      let drafts: () => EventDraft[];
      if (e.type === "conf") {
        out = members.applyConfChange(this.#store, cmd as ConfChange);
        drafts = () => confEvents(cmd as ConfChange);
      } else {
        const before = this.eventsBefore(cmd as Command);
        out = this.applyCommand(cmd as Command);
        drafts = () => eventsOf(cmd as Command, out.value, before);
      }
      this.recordEvents(e.index, drafts);
      this.db.exec("RELEASE entry");
      for (const c of out.changed) placementCheck.noteChange(this.#store, c);
      this.noteChanges(out);
      return { ok: true, value: out.value };
    } catch (err) {
      // A rejected command changes nothing: roll back whatever it started.
      this.db.exec("ROLLBACK TO entry; RELEASE entry");
      this.#store.dropCaches();
      const rejection = asRejection(err);
      if (rejection) return { ok: false, error: rejection };
      // Anything else failed here, not in the command: applyEntries rolls back the
      // whole batch, so the applied index does not move, and the caller stops the node.
      throw new ApplyFailedError(e.index, err);
    }
  }

  /** What {@link beforeOf} reads: the state inside the entry's transaction. */
  private readonly beforeReads = {
    vm: (name: string) => vms.get(this.#store, name),
    node: (name: string) => nodes.get(this.#store, name),
    operation: (id: string) => operations.get(this.#store, id),
  };

  /** What events compare against, read before the command applies (never fails the command). */
  private eventsBefore(cmd: Command): Before {
    try {
      return beforeOf(cmd, this.beforeReads);
    } catch (err) {
      log.error("reading state for events failed", { op: cmd?.op, error: String(err) });
      return {};
    }
  }

  /**
   * Stores the events of the entry at `index` (core/events/). Deriving is pure and
   * deterministic; should it throw (a bug), the entry keeps its result and makes no
   * event, the same on every replica. Stored inside the entry's savepoint: what fails to
   * store them is this node's failure (or, for a constraint, the same on every replica).
   */
  private recordEvents(index: number, drafts: () => EventDraft[]): void {
    let list: EventDraft[];
    try {
      list = drafts();
    } catch (err) {
      log.error("deriving events failed", { index, error: String(err) });
      return;
    }
    if (!list.length) return;
    eventLog.append(this.#store, index, list, eventLog.keepCount(this.#store));
    this.#eventsMade = true;
  }

  /** Sends a command to the applier of its kind. */
  private applyCommand(cmd: Command): Applied {
    const apply = Object.hasOwn(APPLIERS, cmd.op)
      ? APPLIERS[cmd.op] as (s: Store, c: Command) => Applied
      : undefined;
    if (!apply) throw new ValidationError(`unknown command ${(cmd as { op: string }).op}`);
    return apply(this.#store, cmd);
  }

  private inTransaction(fn: () => void): void {
    this.db.exec("BEGIN IMMEDIATE");
    try {
      fn();
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      this.#store.dropCaches();
      throw err;
    }
  }

  // ---- reads (each resource module holds its own) ----------------------------

  members(): members.Member[] {
    return members.all(this.#store);
  }

  member(name: string): members.Member | null {
    return members.get(this.#store, name);
  }

  /** Names of members removed from the group that have not joined again. */
  removedMembers(): string[] {
    return members.removed(this.#store);
  }

  /** A member's recorded certificate fingerprint and credential hash (see member_certs.ts). */
  memberCert(name: string): certs.MemberCert | null {
    return certs.memberCert(certs.sqlOf(this.#store), name);
  }

  /** Every member's recorded identity. */
  memberCerts(): certs.MemberCert[] {
    return certs.memberCerts(certs.sqlOf(this.#store));
  }

  /** The name of the removed member a revoked certificate fingerprint belonged to, or null. */
  revokedCert(fingerprint: string): string | null {
    return certs.revokedCert(certs.sqlOf(this.#store), fingerprint);
  }

  /** The cluster CA certificate and key (only ever used by the leader to sign joins). */
  clusterCa(): { certPem: string; keyPem: string } | null {
    return certs.clusterCa(certs.sqlOf(this.#store));
  }

  confState(): ConfState {
    return members.confState(this.#store);
  }

  nodes(): nodes.NodeRecord[] {
    return nodes.all(this.#store);
  }

  nodeCount(): number {
    return nodes.count(this.#store);
  }

  /** Every host's name: for passes that need only the names (cheap with hundreds of hosts). */
  nodeNames(): string[] {
    return nodes.names(this.#store);
  }

  node(name: string): nodes.NodeRecord | null {
    return nodes.get(this.#store, name);
  }

  /** An operator's metadata on a host (level 2, core/fsm/node_meta.ts). */
  nodeMeta(name: string): Record<string, string> {
    return nodeMeta.of(this.#store, name);
  }

  images(): ImageRecord[] {
    return images.all(this.#store);
  }

  image(name: string): ImageRecord | null {
    return images.get(this.#store, name);
  }

  vms(): VmRecord[] {
    return vms.all(this.#store);
  }

  vm(name: string): VmRecord | null {
    return vms.get(this.#store, name);
  }

  /**
   * Names of the VMs on `q`'s node, in its state, after its `after` (labels and limit
   * ignored), read as the caller iterates: within one turn of the event loop.
   */
  vmNames(q: vms.VmQuery): Iterable<string> {
    return vms.names(this.#store, q);
  }

  /** How many VMs are in each state (the leader's /metrics). */
  vmCountsByState(): Partial<Record<VmState, number>> {
    return vms.countByState(this.#store);
  }

  /** VMs matching `q` (filters, a page), in name order. */
  listVms(q: vms.VmQuery): VmRecord[] {
    return vms.list(this.#store, q);
  }

  group(name: string): PlacementGroup | null {
    return groups.get(this.#store, name);
  }

  groups(): PlacementGroup[] {
    return groups.all(this.#store);
  }

  network(name: string): networks.NetworkRecord | null {
    return networks.get(this.#store, name);
  }

  networks(): networks.NetworkRecord[] {
    return networks.all(this.#store);
  }

  /** The NICs on a network, with their VM, address and MAC. */
  networkPorts(name: string): ReturnType<typeof networks.ports> {
    return networks.ports(this.#store, name);
  }

  /** A host's provider bridge mappings, physnet → bridge (core/fsm/bridge_mappings.ts). */
  bridgeMappings(node: string): Record<string, string> {
    return bridgeMappings.of(this.#store, node);
  }

  /** The hosts that map `physnet` to a bridge, in name order. */
  hostsMapping(physnet: string): string[] {
    return bridgeMappings.hostsMapping(this.#store, physnet);
  }

  operation(id: string): OperationRecord | null {
    return operations.get(this.#store, id);
  }

  /** The newest 1000 operations, newest first. */
  operations(): OperationRecord[] {
    return operations.all(this.#store);
  }

  /**
   * Every running operation, newest first: what checks for one under way read, as VM
   * starts and stops (operations too) may push an old running one out of {@link operations}.
   */
  runningOperations(): OperationRecord[] {
    return operations.running(this.#store);
  }

  /** A page of operations, newest first (see operations.page). */
  operationPage(q: operations.OperationPage): OperationRecord[] {
    return operations.page(this.#store, q);
  }

  /** Audit records matching `q`, newest first. */
  auditEntries(q: audit.AuditQuery = {}): audit.AuditEntry[] {
    return audit.list(this.#store, q);
  }

  /** Checks a presented token (by the hash of its secret) at `now`: live, expired or unknown. */
  checkApiToken(hash: string, now: number): tokens.TokenCheck {
    return tokens.check(this.#store, hash, now);
  }

  /** Every API token (never a secret or hash). */
  apiTokens(): tokens.TokenView[] {
    return tokens.all(this.#store);
  }

  apiToken(name: string): tokens.TokenView | null {
    return tokens.get(this.#store, name);
  }

  joinTokens(): joinTokens.JoinTokenView[] {
    return joinTokens.all(this.#store);
  }

  /** The latest configuration version; frozen, shared by every caller. */
  config(): config.ConfigVersion {
    return config.current(this.#store);
  }

  /** The current settings, or the defaults on a joiner that has not received any state yet. */
  settings(): ClusterConfig {
    return config.settings(this.#store);
  }

  configVersion(version: number): config.ConfigVersion {
    return config.version(this.#store, version);
  }

  /** Which configuration versions are kept, and the settings that decide it. */
  configRetention(): config.ConfigRetention {
    return config.retention(this.#store);
  }

  /** The newest `limit` versions, or those older than version `before`; newest first. */
  configHistory(limit = 100, before?: number): config.ConfigVersion[] {
    return config.history(this.#store, limit, before);
  }

  // ---- snapshots -----------------------------------------------------------

  /** Serializes the replicated tables in memory (bootstrap and tests; nodes use snapshotToFile). */
  snapshotData(): string {
    const parts = [headerLine(this.clusterId())];
    for (const { name: t } of TABLES) {
      for (const row of this.#store.sql(`SELECT * FROM ${t}`).all() as Row[]) {
        parts.push(rowLine(t, row));
      }
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
      for (const { name: t } of TABLES) {
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
      fresh.exec(SCHEMA);
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
    this.emit(null);
    this.notifyEvents(true);
  }

  /**
   * Puts the database file `replacement` in place of ours and reopens. The
   * close-rename-open step is synchronous: nothing may run while no database
   * is open. If the rename is lost in a crash, the old file (with its older
   * applied index) is found and the node restores the snapshot again.
   */
  private async swapDatabase(replacement: string): Promise<void> {
    await fsyncFile(replacement);
    // Closing checkpoints the WAL into the file; a stale -wal must never meet the new file.
    this.db.close();
    try {
      removeDatabaseFiles(this.path, ["-wal", "-shm"]);
      Deno.renameSync(replacement, this.path);
    } finally {
      this.db = this.open();
      this.#store.reopen(this.db);
    }
    await fsyncDir(dirname(this.path));
  }

  private restoreInPlace(snap: ParsedSnapshot, index: number): void {
    this.#store.dropCaches();
    this.inTransaction(() => {
      for (const { name: t } of TABLES) this.db.exec(`DELETE FROM ${t}`);
      for (const batch of snap.batches) {
        for (const [t, row] of batch) insertRow(this.db, t, row);
      }
      if (snap.clusterId) this.#store.metaSet("cluster_id", snap.clusterId);
      this.#store.metaSet("applied_index", index);
    });
    this.emit(null);
    this.notifyEvents(true);
  }
}

/** Rows per batch when restoring: bounds memory and the time between event-loop turns. */
const RESTORE_BATCH_ROWS = 500;

const COLUMN_NAME = /^[a-z_][a-z0-9_]*$/;

/** Prepared INSERTs per connection: a restore inserts many rows of few shapes. */
const insertStatements = new WeakMap<DatabaseSync, Map<string, StatementSync>>();

/** Inserts one snapshot row; table and column names are checked, as the file came from a peer. */
function insertRow(db: DatabaseSync, table: string, row: Row): void {
  if (!TABLE_NAMES.has(table)) {
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
