/**
 * What every resource module of the state machine works on: the open
 * database with its prepared statements and meta keys, the per-resource
 * caches, and the shape of an applier (one function per command) and of its
 * outcome.
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import type { Command } from "./commands.ts";

/** A database row as node:sqlite returns it. */
export type Row = Record<string, unknown>;

/** One replicated table: its name (as in snapshots) and its DDL. */
export interface Table {
  name: string;
  ddl: string;
}

/**
 * A part of the replicated state that changed, named so that listeners and
 * caches need not guess from the command (`resource` is the module's kind,
 * `name` the row's key when one row changed).
 */
export interface Changed {
  resource:
    | "cluster"
    | "member"
    | "node"
    | "joinToken"
    | "apiToken"
    | "audit"
    | "config"
    | "image"
    | "vm"
    | "group"
    | "network"
    | "securityGroup"
    | "router"
    | "floatingIp"
    | "bridgeMapping"
    | "pool"
    | "volume"
    | "operation"
    | "backupTarget"
    | "backup"
    | "backupSchedule"
    | "alertRule"
    | "alert";
  name?: string;
}

/** What applying one command returned (the proposer's answer) and what it changed. */
export interface Applied {
  value: unknown;
  changed: Changed[];
}

/** Builds an {@link Applied}. */
export function applied(value: unknown, ...changed: Changed[]): Applied {
  return { value, changed };
}

/** The applier of one command kind. */
export type Applier<K extends Command["op"]> = (
  s: Store,
  c: Extract<Command, { op: K }>,
) => Applied;

/** Appliers for a set of command kinds: a kind without one does not compile. */
export type Appliers<K extends Command["op"] = Command["op"]> = { [P in K]: Applier<P> };

/**
 * One resource of the replicated state: its tables (snapshotted and restored
 * in the order resources are registered) and the appliers of its commands.
 */
export interface Resource<K extends Command["op"] = never> {
  tables: Table[];
  appliers: Appliers<K>;
  /** Brings an existing database written by an older version up to the tables' shape. */
  migrate?(db: DatabaseSync): void;
}

/** Names a cache kept in a {@link Store}; `init` makes an empty one. */
export interface CacheKey<T> {
  readonly init: () => T;
}

/** The state machine's database as resource modules see it. */
export class Store {
  #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  readonly #caches = new Map<CacheKey<unknown>, unknown>();
  /**
   * The Raft index of the entry being applied (set by the state machine before each one):
   * what appliers derive ids from, so that every replica makes the same ones.
   */
  entryIndex = 0;

  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  get db(): DatabaseSync {
    return this.#db;
  }

  /** Points the store at another open database (after a restore swapped the file). */
  reopen(db: DatabaseSync): void {
    this.#db = db;
    this.#statements.clear();
    this.dropCaches();
  }

  /** Prepared statements are cached: preparing costs more than running them. */
  sql(text: string): StatementSync {
    let st = this.#statements.get(text);
    if (!st) this.#statements.set(text, st = this.#db.prepare(text));
    return st;
  }

  metaGet(key: string): string | null {
    const row = this.sql("SELECT value FROM meta WHERE key = ?").get(key) as
      | { value: string }
      | undefined;
    return row ? row.value : null;
  }

  metaSet(key: string, value: string | number): void {
    this.sql("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)").run(key, String(value));
  }

  /** The cache named by `key`, made empty on first use and after {@link dropCaches}. */
  cache<T>(key: CacheKey<T>): T {
    if (!this.#caches.has(key)) this.#caches.set(key, key.init());
    return this.#caches.get(key) as T;
  }

  /**
   * Forgets every cache: called when a transaction rolls back (a cache may
   * hold what it wrote) and when a snapshot replaces the state.
   */
  dropCaches(): void {
    this.#caches.clear();
  }
}

/** `o` and everything it holds made read-only: a cached record is shared by every reader. */
export function deepFreeze<T>(o: T): T {
  if (o && typeof o === "object" && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/**
 * Records read by key, kept as read (frozen; a miss as null) so that the reads a request and
 * its entry make of the same row (a create reads its VM's name and image about ten times
 * between the API, the planner and the applier) decode it once. Bounded: the oldest entry
 * goes first. Whoever writes a row calls {@link forget} for it before reading it back; a
 * rolled-back transaction or a restored snapshot drops the whole cache (Store.dropCaches).
 */
export class RecordCache<T> {
  readonly #key: CacheKey<Map<string, T | null>> = { init: () => new Map() };
  constructor(private readonly max: number) {}

  get(s: Store, key: string, read: () => T | null): T | null {
    const cache = s.cache(this.#key);
    const hit = cache.get(key);
    if (hit !== undefined) return hit;
    const value = deepFreeze(read());
    if (cache.size >= this.max) cache.delete(cache.keys().next().value!);
    cache.set(key, value);
    return value;
  }

  forget(s: Store, key: string): void {
    s.cache(this.#key).delete(key);
  }
}

/** Milliseconds in a day (retention settings are in days). */
export const DAY_MS = 86_400_000;

/** Epoch milliseconds as an ISO string. */
export function iso(ms: unknown): string {
  return new Date(Number(ms)).toISOString();
}
