/**
 * Raft membership as the state machine records it: applied from the log's
 * configuration-change entries (not from commands), so every replica agrees
 * on who votes at each index.
 */
import type { ConfChange, ConfState } from "../raft/types.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";
import * as nodes from "./nodes.ts";
import * as certs from "./member_certs.ts";

/** A member of the Raft group. */
export interface Member {
  name: string;
  url: string;
  role: "voter" | "learner";
}

const TABLE = {
  name: "members",
  ddl:
    `CREATE TABLE IF NOT EXISTS members (name TEXT PRIMARY KEY, url TEXT NOT NULL, role TEXT NOT NULL, added_at INTEGER NOT NULL);`,
};

/**
 * Names of members that were removed (or left) and have not joined again: what
 * they left behind outside novactl (their OVN chassis, see
 * host/ovs/southbound_chassis.ts) is theirs alone to clean up. A name that joins
 * again leaves this table.
 */
const REMOVED_TABLE = {
  name: "removed_members",
  ddl:
    `CREATE TABLE IF NOT EXISTS removed_members (name TEXT PRIMARY KEY, removed_at INTEGER NOT NULL);`,
};

export function all(s: Store): Member[] {
  return (s.sql("SELECT name, url, role FROM members ORDER BY name").all() as Row[])
    .map((r) => ({ name: String(r.name), url: String(r.url), role: r.role as Member["role"] }));
}

export function get(s: Store, name: string): Member | null {
  const r = s.sql("SELECT name, url, role FROM members WHERE name = ?").get(name) as
    | Row
    | undefined;
  return r ? { name: String(r.name), url: String(r.url), role: r.role as Member["role"] } : null;
}

/** Names of members removed from the group (and not members again), by name. */
export function removed(s: Store): string[] {
  return (s.sql("SELECT name FROM removed_members ORDER BY name").all() as Row[])
    .map((r) => String(r.name));
}

/** Voters and learners, by name. */
export function confState(s: Store): ConfState {
  const ms = all(s);
  return {
    voters: ms.filter((m) => m.role === "voter").map((m) => m.name),
    learners: ms.filter((m) => m.role === "learner").map((m) => m.name),
  };
}

/** Adds (or replaces) a member. */
export function put(s: Store, name: string, url: string, role: Member["role"], at: number): void {
  s.sql("INSERT OR REPLACE INTO members (name, url, role, added_at) VALUES (?, ?, ?, ?)")
    .run(name, url, role, at);
}

/** Applies a Raft configuration change entry. */
export function applyConfChange(s: Store, cc: ConfChange): Applied {
  const ctx = cc.context
    ? JSON.parse(cc.context) as { url?: string; at?: number } & certs.MemberIdentitySeed
    : {};
  switch (cc.type) {
    case "addLearner":
      put(s, cc.node, ctx.url ?? "", "learner", ctx.at ?? 0);
      s.sql("DELETE FROM removed_members WHERE name = ?").run(cc.node);
      certs.recordMemberCert(certs.sqlOf(s), cc.node, ctx, ctx.at ?? 0);
      break;
    case "promote":
      s.sql("UPDATE members SET role = 'voter' WHERE name = ?").run(cc.node);
      break;
    case "demote":
      s.sql("UPDATE members SET role = 'learner' WHERE name = ?").run(cc.node);
      break;
    case "remove":
      s.sql("DELETE FROM members WHERE name = ?").run(cc.node);
      s.sql("INSERT OR REPLACE INTO removed_members (name, removed_at) VALUES (?, ?)")
        .run(cc.node, ctx.at ?? 0);
      nodes.deleteRow(s, cc.node);
      certs.revokeMemberCert(certs.sqlOf(s), cc.node, ctx.at ?? 0);
      return applied(
        { member: cc.node, change: cc.type },
        { resource: "member", name: cc.node },
        { resource: "node", name: cc.node },
      );
  }
  return applied({ member: cc.node, change: cc.type }, { resource: "member", name: cc.node });
}

/** Members: changed by conf-change entries only, so no command appliers. */
export const resource: Resource = { tables: [TABLE, REMOVED_TABLE], appliers: {} };
