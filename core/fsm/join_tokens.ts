/** Single-use, expiring tokens that let a new node join the cluster. */
import { ConflictError, NovaError } from "../errors/mod.ts";
import type { Command } from "./commands.ts";
import * as config from "./config.ts";
import * as members from "./members.ts";
import {
  type Applied,
  applied,
  DAY_MS,
  iso,
  type Resource,
  type Row,
  type Store,
} from "./store.ts";

/** A join token as listed (its id shortened: the id is the secret). */
export interface JoinTokenView {
  id: string;
  createdAt: string;
  expiresAt: string;
  usedBy: string | null;
}

const TABLE = {
  name: "join_tokens",
  ddl:
    `CREATE TABLE IF NOT EXISTS join_tokens (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  created_by TEXT NOT NULL, used_at INTEGER, used_by TEXT);`,
};

export function all(s: Store): JoinTokenView[] {
  return (s.sql("SELECT * FROM join_tokens ORDER BY created_at").all() as Row[]).map((r) => ({
    id: String(r.id).slice(0, 12),
    createdAt: iso(r.created_at),
    expiresAt: iso(r.expires_at),
    usedBy: (r.used_by as string | null) ?? null,
  }));
}

function create(s: Store, c: Extract<Command, { op: "joinToken.create" }>): Applied {
  s.sql("INSERT INTO join_tokens (id, created_at, expires_at, created_by) VALUES (?, ?, ?, ?)")
    .run(c.id, c.at, c.expiresAt, c.by);
  prune(s, c.at);
  return applied({ expiresAt: c.expiresAt }, { resource: "joinToken" });
}

function consume(s: Store, c: Extract<Command, { op: "joinToken.consume" }>): Applied {
  const row = s.sql("SELECT expires_at, used_at, used_by FROM join_tokens WHERE id = ?")
    .get(c.id) as
      | { expires_at: number; used_at: number | null; used_by: string | null }
      | undefined;
  if (!row) throw new NovaError("unauthorized", "join token is not valid for this cluster");
  if (row.used_at !== null) {
    throw new NovaError("unauthorized", `join token was already used (by ${row.used_by})`);
  }
  if (row.expires_at <= c.at) {
    throw new NovaError("unauthorized", `join token expired at ${iso(row.expires_at)}`);
  }
  if (members.get(s, c.node)) throw new ConflictError(`a member named "${c.node}" already exists`);
  s.sql("UPDATE join_tokens SET used_at = ?, used_by = ? WHERE id = ?").run(c.at, c.node, c.id);
  prune(s, c.at);
  return applied({ node: c.node }, { resource: "joinToken" });
}

/** Every unused join token expires now (see the command's doc in commands.ts). */
function voidAll(s: Store, c: Extract<Command, { op: "joinToken.voidAll" }>): Applied {
  const r = s.sql("UPDATE join_tokens SET expires_at = ? WHERE used_at IS NULL AND expires_at > ?")
    .run(c.at, c.at);
  return applied({ voided: Number(r.changes) }, { resource: "joinToken" });
}

/** Used or expired join tokens are kept joinTokens.keepDays after their use or expiry. */
function prune(s: Store, at: number): void {
  const cutoff = at - config.retentionOf(config.settings(s)).joinTokenDays * DAY_MS;
  s.sql(
    "DELETE FROM join_tokens WHERE (used_at IS NOT NULL AND used_at < ?) OR (used_at IS NULL AND expires_at < ?)",
  ).run(cutoff, cutoff);
}

/** Join tokens. */
export const resource: Resource<"joinToken.create" | "joinToken.consume" | "joinToken.voidAll"> = {
  tables: [TABLE],
  appliers: {
    "joinToken.create": create,
    "joinToken.consume": consume,
    "joinToken.voidAll": voidAll,
  },
};
