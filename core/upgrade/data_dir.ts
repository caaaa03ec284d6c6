/** The cluster level a data dir's state is at, read before a node touches anything. */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { assertDataDirSupported } from "./mod.ts";

/**
 * The level of `dataDir/state.db`: 1 when it records none (a release before 0.2.0 wrote it),
 * null when there is no state yet (a new node).
 */
export function dataDirLevel(dataDir: string): number | null {
  const path = join(dataDir, "state.db");
  try {
    Deno.statSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const table = db.prepare(
      "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cluster_level'",
    ).get();
    if (!table) return 1;
    const row = db.prepare("SELECT MAX(level) AS level FROM cluster_level").get() as
      | { level: number | null }
      | undefined;
    return row?.level ?? 1;
  } finally {
    db.close();
  }
}

/** Refuses, before the node starts anything, a data dir a newer release wrote. */
export function assertDataDirUsable(dataDir: string): void {
  const level = dataDirLevel(dataDir);
  if (level !== null) assertDataDirSupported(level, dataDir);
}
