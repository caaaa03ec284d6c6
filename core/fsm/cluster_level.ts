/**
 * The cluster level recorded in replicated state (what core/upgrade/ gates on): one row per
 * level reached, written by `cluster.upgrade` entries. No row means level 1: releases before
 * 0.2.0 recorded none. Applying is deterministic and idempotent, and a level this program
 * does not know halts the node (a plain Error: the node's failure, fail-stop) instead of
 * letting it apply later entries it may not understand.
 */
import type { Command } from "./commands.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";
import { releaseOfLevel } from "../upgrade/levels.ts";
import { PROGRAM_MAX_LEVEL, PROGRAM_VERSION } from "../upgrade/program.ts";
import { iso } from "./store.ts";

const TABLE = {
  name: "cluster_level",
  ddl:
    `CREATE TABLE IF NOT EXISTS cluster_level (level INTEGER PRIMARY KEY, since TEXT NOT NULL, at INTEGER NOT NULL);`,
};

/** One level the cluster reached: the release that brought it, and when. */
export interface LevelReached {
  level: number;
  since: string;
  at: string;
}

/** The cluster's level: the highest reached, 1 when none is recorded. */
export function level(s: Store): number {
  const row = s.sql("SELECT MAX(level) AS level FROM cluster_level").get() as Row | undefined;
  return row?.level == null ? 1 : Number(row.level);
}

/** Every level reached above 1, oldest first. */
export function history(s: Store): LevelReached[] {
  return (s.sql("SELECT level, since, at FROM cluster_level ORDER BY level").all() as Row[])
    .map((r) => ({ level: Number(r.level), since: String(r.since), at: iso(r.at) }));
}

/**
 * Raises the level to `c.level`, one step at a time (each step's migration, should one
 * need to rewrite rows, runs here in order); a level already reached changes nothing.
 */
function upgrade(s: Store, c: Extract<Command, { op: "cluster.upgrade" }>): Applied {
  const from = level(s);
  if (c.level <= from) return applied({ level: from, changed: false });
  for (let next = from + 1; next <= c.level; next++) {
    const since = releaseOfLevel(next);
    if (next > PROGRAM_MAX_LEVEL || !since) {
      throw new Error(
        `cluster level ${next} is not known to novactl ${PROGRAM_VERSION} (levels up to ${PROGRAM_MAX_LEVEL}): upgrade this node's program`,
      );
    }
    s.sql("INSERT INTO cluster_level (level, since, at) VALUES (?, ?, ?)").run(next, since, c.at);
  }
  return applied({ level: c.level, changed: true }, { resource: "cluster" });
}

/** The cluster level. */
export const resource: Resource<"cluster.upgrade"> = {
  tables: [TABLE],
  appliers: { "cluster.upgrade": upgrade },
};
