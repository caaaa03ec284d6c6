/**
 * Operator metadata on hosts (level 2, core/upgrade/levels.ts): free key=value notes an
 * operator keeps on a host (rack, owner, ticket), as Nomad's dynamic node metadata. Unlike
 * labels, which the host reports itself on every registration, nothing but the operator
 * changes them. Below level 2 the applier refuses `node.meta`, the outcome older programs
 * give for a command kind they do not know, so replicas agree even if a proposal slipped
 * past the leader's gate.
 */
import type { Command } from "./commands.ts";
import { FeatureUnavailableError, NotFoundError } from "../errors/mod.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";
import { levelOfOp } from "../upgrade/levels.ts";
import * as clusterLevel from "./cluster_level.ts";
import * as nodes from "./nodes.ts";

const TABLE = {
  name: "node_meta",
  ddl:
    `CREATE TABLE IF NOT EXISTS node_meta (node TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (node, key));`,
};

/** A host's metadata, key → value ({} when it has none). */
export function of(s: Store, node: string): Record<string, string> {
  const rows = s.sql("SELECT key, value FROM node_meta WHERE node = ? ORDER BY key").all(
    node,
  ) as Row[];
  return Object.fromEntries(rows.map((r) => [String(r.key), String(r.value)]));
}

/** Forgets a host's metadata (the host left the cluster). */
export function forget(s: Store, node: string): void {
  s.sql("DELETE FROM node_meta WHERE node = ?").run(node);
}

/** Replaces a host's metadata. */
function replace(s: Store, c: Extract<Command, { op: "node.meta" }>): Applied {
  const needs = levelOfOp(c.op);
  const level = clusterLevel.level(s);
  if (level < needs) {
    throw new FeatureUnavailableError(
      `${c.op} needs cluster level ${needs}; the cluster runs at level ${level}`,
      { op: c.op, needsLevel: needs, level },
    );
  }
  if (!nodes.get(s, c.name)) throw new NotFoundError("node", c.name);
  forget(s, c.name);
  const insert = s.sql("INSERT INTO node_meta (node, key, value) VALUES (?, ?, ?)");
  for (const [k, v] of Object.entries(c.meta)) insert.run(c.name, k, v);
  return applied({ name: c.name, meta: of(s, c.name) }, { resource: "node", name: c.name });
}

/** Host metadata. */
export const resource: Resource<"node.meta"> = {
  tables: [TABLE],
  appliers: { "node.meta": replace },
};
