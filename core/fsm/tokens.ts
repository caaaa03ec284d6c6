/**
 * API tokens: a name, a role and an optional expiry, stored under the SHA-256
 * of the secret (the secret itself never enters the log or a snapshot).
 * Names are unique, so a token is revoked or rotated by its name; the
 * bootstrap token is named "admin".
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import type { DatabaseSync } from "node:sqlite";
import type { Command, Role } from "./commands.ts";
import {
  type Applied,
  applied,
  type CacheKey,
  iso,
  type Resource,
  type Row,
  type Store,
} from "./store.ts";

/** Who a token authenticates. */
export interface Principal {
  name: string;
  role: Role;
}

/** A token as listed: never its secret or hash. */
export interface TokenView {
  name: string;
  role: Role;
  createdAt: string;
  createdBy: string | null;
  /** null: never expires. */
  expiresAt: string | null;
}

/** What a presented secret is: a live token's principal, a token past its expiry, or nothing. */
export type TokenCheck =
  | { ok: true; principal: Principal }
  | { ok: false; reason: "expired"; name: string; expiresAt: string }
  | { ok: false; reason: "unknown" };

/** The name of the token `cluster init` creates. */
export const BOOTSTRAP_TOKEN_NAME = "admin";

/** Token names: what `token create NAME` accepts. */
export const TOKEN_NAME = /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/;

/** Says what {@link TOKEN_NAME} allows. */
export const TOKEN_NAME_RULE =
  "lowercase letters, digits, '.', '_' and '-', 1-63 characters, starting and ending with a letter or digit";

/** Roles in increasing power. */
export const ROLES: readonly Role[] = ["viewer", "operator", "admin"];

const TABLE = {
  name: "api_tokens",
  ddl:
    `CREATE TABLE IF NOT EXISTS api_tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER, created_by TEXT);`,
};

/** Columns added after the first version; databases written before get them on open. */
const ADDED_COLUMNS: Record<string, string> = { expires_at: "INTEGER", created_by: "TEXT" };

function migrate(db: DatabaseSync): void {
  const have = new Set(
    (db.prepare("PRAGMA table_info(api_tokens)").all() as Row[]).map((r) => String(r.name)),
  );
  for (const [col, type] of Object.entries(ADDED_COLUMNS)) {
    if (!have.has(col)) db.exec(`ALTER TABLE api_tokens ADD COLUMN ${col} ${type}`);
  }
}

interface Cached extends Principal {
  expiresAt: number | null;
}

/**
 * Every API request authenticates, so known tokens are cached by hash. Every
 * token applier clears it (create, revoke, rotate), an expired entry is
 * dropped when seen, and rollbacks and restores drop it with every cache.
 */
const BY_HASH: CacheKey<Map<string, Cached>> = { init: () => new Map() };

function lookup(s: Store, hash: string): Cached | null {
  const cache = s.cache(BY_HASH);
  const cached = cache.get(hash);
  if (cached) return cached;
  const row = s.sql("SELECT name, role, expires_at FROM api_tokens WHERE hash = ?").get(hash) as
    | Row
    | undefined;
  if (!row) return null;
  const found: Cached = {
    name: String(row.name),
    role: row.role as Role,
    expiresAt: row.expires_at === null || row.expires_at === undefined
      ? null
      : Number(row.expires_at),
  };
  cache.set(hash, found);
  return found;
}

/**
 * Checks the token whose secret hashes to `hash` at time `now` (epoch ms,
 * this node's clock: expiry is enforced where the request arrives).
 */
export function check(s: Store, hash: string, now: number): TokenCheck {
  const t = lookup(s, hash);
  if (!t) return { ok: false, reason: "unknown" };
  if (t.expiresAt !== null && t.expiresAt <= now) {
    s.cache(BY_HASH).delete(hash);
    return { ok: false, reason: "expired", name: t.name, expiresAt: iso(t.expiresAt) };
  }
  return { ok: true, principal: { name: t.name, role: t.role } };
}

function toView(r: Row): TokenView {
  return {
    name: String(r.name),
    role: r.role as Role,
    createdAt: iso(r.created_at),
    createdBy: (r.created_by as string | null) ?? null,
    expiresAt: r.expires_at === null || r.expires_at === undefined ? null : iso(r.expires_at),
  };
}

/** Every token, by name. */
export function all(s: Store): TokenView[] {
  return (s.sql("SELECT * FROM api_tokens ORDER BY name, created_at").all() as Row[]).map(toView);
}

/** The token named `name`, or null. */
export function get(s: Store, name: string): TokenView | null {
  const row = s.sql("SELECT * FROM api_tokens WHERE name = ? ORDER BY created_at DESC LIMIT 1")
    .get(name) as Row | undefined;
  return row ? toView(row) : null;
}

/** Stores the bootstrap admin token of a new cluster. */
export function bootstrap(s: Store, hash: string, at: number): void {
  s.cache(BY_HASH).clear();
  s.sql(
    "INSERT OR REPLACE INTO api_tokens (hash, name, role, created_at, created_by) VALUES (?, ?, 'admin', ?, 'system')",
  ).run(hash, BOOTSTRAP_TOKEN_NAME, at);
}

function validate(name: string, role?: Role, expiresAt?: number | null, at?: number): void {
  if (typeof name !== "string" || !TOKEN_NAME.test(name)) {
    throw ValidationError.field("name", TOKEN_NAME_RULE);
  }
  if (role !== undefined && !ROLES.includes(role)) {
    throw ValidationError.field("role", `must be one of ${ROLES.join(", ")}`);
  }
  if (expiresAt !== undefined && expiresAt !== null) {
    if (!Number.isSafeInteger(expiresAt) || (at !== undefined && expiresAt <= at)) {
      throw ValidationError.field("ttl", "must be a positive duration");
    }
  }
}

/** Live (unexpired at `at`) admin tokens other than those named `except`. */
function otherLiveAdmins(s: Store, except: string, at: number): number {
  const row = s.sql(
    "SELECT COUNT(*) AS n FROM api_tokens WHERE role = 'admin' AND name != ? AND (expires_at IS NULL OR expires_at > ?)",
  ).get(except, at) as { n: number };
  return Number(row.n);
}

function create(s: Store, c: Extract<Command, { op: "apiToken.create" }>): Applied {
  validate(c.name, c.role, c.expiresAt, c.at);
  const existing = s.sql("SELECT expires_at FROM api_tokens WHERE name = ?").all(c.name) as Row[];
  // A name is free again once its token expired: creating replaces the expired one.
  const live = existing.some((r) => r.expires_at === null || Number(r.expires_at) > c.at);
  if (live) throw new ConflictError(`a token named "${c.name}" already exists`);
  s.cache(BY_HASH).clear();
  s.sql("DELETE FROM api_tokens WHERE name = ?").run(c.name);
  s.sql(
    "INSERT INTO api_tokens (hash, name, role, created_at, expires_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
  ).run(c.hash, c.name, c.role, c.at, c.expiresAt ?? null, c.by);
  return applied(get(s, c.name), { resource: "apiToken", name: c.name });
}

function revoke(s: Store, c: Extract<Command, { op: "apiToken.revoke" }>): Applied {
  const token = get(s, c.name);
  if (!token) throw new NotFoundError("token", c.name);
  if (token.role === "admin" && otherLiveAdmins(s, c.name, c.at) === 0) {
    throw new ConflictError(
      `"${c.name}" is the last admin token: create another admin token first (or rotate this one)`,
    );
  }
  s.cache(BY_HASH).clear();
  s.sql("DELETE FROM api_tokens WHERE name = ?").run(c.name);
  return applied({ name: c.name, revoked: true }, { resource: "apiToken", name: c.name });
}

function rotate(s: Store, c: Extract<Command, { op: "apiToken.rotate" }>): Applied {
  const token = get(s, c.name);
  if (!token) throw new NotFoundError("token", c.name);
  validate(c.name, undefined, c.expiresAt, c.at);
  const expiresAt = c.expiresAt === undefined
    ? (token.expiresAt === null ? null : Date.parse(token.expiresAt))
    : c.expiresAt;
  if (expiresAt !== null && expiresAt <= c.at) {
    throw ValidationError.field(
      "ttl",
      `token "${c.name}" expired at ${iso(expiresAt)}; give it a new ttl`,
    );
  }
  s.cache(BY_HASH).clear();
  s.sql("DELETE FROM api_tokens WHERE name = ?").run(c.name);
  s.sql(
    "INSERT INTO api_tokens (hash, name, role, created_at, expires_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
  ).run(c.hash, c.name, token.role, c.at, expiresAt, c.by);
  return applied(get(s, c.name), { resource: "apiToken", name: c.name });
}

/** API tokens. */
export const resource: Resource<"apiToken.create" | "apiToken.revoke" | "apiToken.rotate"> = {
  tables: [TABLE],
  appliers: { "apiToken.create": create, "apiToken.revoke": revoke, "apiToken.rotate": rotate },
  migrate,
};
