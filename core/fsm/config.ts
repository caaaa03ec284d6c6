/**
 * Cluster configuration: every change is a new numbered version (so a write
 * can be conditional on the version it read, and any kept version can be
 * rolled back to); old versions are pruned by the retention settings.
 */
import { ConflictError, NotFoundError, PrunedError } from "../errors/mod.ts";
import {
  type ClusterConfig,
  DEFAULT_CONFIG,
  validateConfigPatch,
  validateFullConfig,
} from "../config/mod.ts";
import {
  type Applied,
  applied,
  type CacheKey,
  DAY_MS,
  deepFreeze,
  iso,
  type Resource,
  type Row,
  type Store,
} from "./store.ts";
import type { Command } from "./commands.ts";

/** One stored configuration version. */
export interface ConfigVersion {
  version: number;
  config: ClusterConfig;
  author: string;
  createdAt: string;
  action: string;
}

/** Which configuration versions are kept. */
export interface ConfigRetention {
  keepVersions: number;
  keepDays: number;
  /** Oldest and newest version still stored. */
  oldest: number;
  newest: number;
}

const TABLE = {
  name: "config_versions",
  ddl:
    `CREATE TABLE IF NOT EXISTS config_versions (version INTEGER PRIMARY KEY, data TEXT NOT NULL, author TEXT NOT NULL,
  created_at INTEGER NOT NULL, action TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS config_versions_created_at ON config_versions (created_at);`,
};

/** The latest version, cached: it is read on every write and by the node's loops. */
const CURRENT: CacheKey<{ version: ConfigVersion | null }> = { init: () => ({ version: null }) };

function toConfigVersion(r: Row): ConfigVersion {
  return {
    version: Number(r.version),
    config: JSON.parse(String(r.data)),
    author: String(r.author),
    createdAt: iso(r.created_at),
    action: String(r.action),
  };
}

// ---- reads -------------------------------------------------------------------

function latestVersion(s: Store): number {
  const cached = s.cache(CURRENT).version;
  if (cached) return cached.version;
  const row = s.sql("SELECT MAX(version) AS v FROM config_versions").get() as { v: number | null };
  return row.v ?? 0;
}

/** The latest version; frozen, shared by every caller. */
export function current(s: Store): ConfigVersion {
  const cache = s.cache(CURRENT);
  if (cache.version) return cache.version;
  const v = latestVersion(s);
  if (v === 0) throw new NotFoundError("configuration", "current");
  cache.version = deepFreeze(version(s, v));
  return cache.version;
}

/** The current settings, or the defaults on a joiner that has not received any state yet. */
export function settings(s: Store): ClusterConfig {
  const cached = s.cache(CURRENT).version;
  if (cached) return cached.config;
  return latestVersion(s) === 0 ? DEFAULT_CONFIG : current(s).config;
}

/** @throws PrunedError for a version retention removed, NotFoundError for one never written. */
export function version(s: Store, v: number): ConfigVersion {
  const row = s.sql("SELECT * FROM config_versions WHERE version = ?").get(v) as Row | undefined;
  if (row) return toConfigVersion(row);
  const kept = retention(s);
  if (Number.isInteger(v) && v >= 1 && v < kept.oldest) {
    throw new PrunedError(
      `configuration version ${v} was pruned: ${describeRetention(kept)}`,
      { version: v, ...kept },
    );
  }
  throw new NotFoundError("configuration version", String(v));
}

/** Which configuration versions are kept, and the settings that decide it. */
export function retention(s: Store): ConfigRetention {
  const row = s.sql(
    "SELECT (SELECT MIN(version) FROM config_versions) AS oldest, (SELECT MAX(version) FROM config_versions) AS newest",
  ).get() as { oldest: number | null; newest: number | null };
  const r = retentionOf(settings(s));
  return {
    keepVersions: r.configVersions,
    keepDays: r.configDays,
    oldest: row.oldest ?? 0,
    newest: row.newest ?? 0,
  };
}

/** The newest `limit` versions, newest first. */
export function history(s: Store, limit = 100, before?: number): ConfigVersion[] {
  const rows = before === undefined
    ? s.sql("SELECT * FROM config_versions ORDER BY version DESC LIMIT ?").all(limit)
    : s.sql("SELECT * FROM config_versions WHERE version < ? ORDER BY version DESC LIMIT ?")
      .all(before, limit);
  return (rows as Row[]).map(toConfigVersion);
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
export function retentionOf(config: Partial<ClusterConfig>) {
  const get = <K extends keyof ClusterConfig>(k: K) => config[k] ?? DEFAULT_CONFIG[k];
  return {
    configVersions: get("config.keepVersions"),
    configDays: get("config.keepDays"),
    operationCount: get("operations.keepCount"),
    operationDays: get("operations.keepDays"),
    joinTokenDays: get("joinTokens.keepDays"),
  };
}

// ---- writes ------------------------------------------------------------------

/** Stores `config` as the next version, unless `ifVersion` is not the current one. */
export function write(
  s: Store,
  config: ClusterConfig,
  ifVersion: number | undefined,
  by: string,
  at: number,
  action: string,
): { version: number } {
  const latest = latestVersion(s);
  if (ifVersion !== undefined && ifVersion !== latest) {
    throw new ConflictError(
      `configuration changed: version is ${latest}, request expected ${ifVersion}`,
      { currentVersion: latest, expectedVersion: ifVersion },
    );
  }
  const version = latest + 1;
  s.sql(
    "INSERT INTO config_versions (version, data, author, created_at, action) VALUES (?, ?, ?, ?, ?)",
  ).run(version, JSON.stringify(config), by, at, action);
  prune(s, config, version, at);
  // Written through: a rolled-back transaction drops every cache (Store.dropCaches).
  s.cache(CURRENT).version = deepFreeze({
    version,
    config,
    author: by,
    createdAt: iso(at),
    action,
  });
  return { version };
}

// Pruning runs inside the apply of the command that adds a row, with that
// command's timestamp (chosen by its proposer and carried in the log), so
// every replica removes exactly the same rows. No local clock is read.

/** The retention deletes (exported so a test can check that each is a search on an index). */
export const PRUNE_SQL = {
  byCount: "DELETE FROM config_versions WHERE version <= ?",
  byAge: "DELETE FROM config_versions WHERE created_at < ? AND version < ?",
};

/** Keeps the newest config.keepVersions versions, none older than config.keepDays but the current. */
function prune(s: Store, config: ClusterConfig, current: number, at: number): void {
  const r = retentionOf(config);
  const cutoff = r.configDays > 0 ? at - r.configDays * DAY_MS : Number.MIN_SAFE_INTEGER;
  // Two range deletes, each on an index: one statement with `OR` scanned every kept
  // version on every write (8.8 % of a follower's CPU at 1,000 kept versions).
  s.sql(PRUNE_SQL.byCount).run(current - r.configVersions);
  if (r.configDays > 0) s.sql(PRUNE_SQL.byAge).run(cutoff, current);
}

function patch(s: Store, c: Extract<Command, { op: "config.patch" }>): Applied {
  // Only the changed keys need validating: the rest already passed when written.
  const value = write(
    s,
    { ...current(s).config, ...validateConfigPatch(c.changes) },
    c.ifVersion,
    c.by,
    c.at,
    "set " + Object.keys(c.changes).join(","),
  );
  return applied(value, { resource: "config" });
}

function replace(s: Store, c: Extract<Command, { op: "config.replace" }>): Applied {
  const value = write(s, validateFullConfig(c.config), c.ifVersion, c.by, c.at, "replace");
  return applied(value, { resource: "config" });
}

function rollback(s: Store, c: Extract<Command, { op: "config.rollback" }>): Applied {
  const old = version(s, c.version);
  const value = write(
    s,
    validateFullConfig(old.config),
    c.ifVersion,
    c.by,
    c.at,
    `rollback to ${c.version}`,
  );
  return applied(value, { resource: "config" });
}

/** Configuration versions. */
export const resource: Resource<"config.patch" | "config.replace" | "config.rollback"> = {
  tables: [TABLE],
  appliers: { "config.patch": patch, "config.replace": replace, "config.rollback": rollback },
};
