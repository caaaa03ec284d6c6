import { join } from "node:path";
import { ensurePrivateFileSync, secureDataDir } from "./permissions.ts";
import { assertEquals } from "../testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { DatabaseSync } from "node:sqlite";

const modeOf = async (p: string) => ((await Deno.stat(p)).mode ?? 0) & 0o777;

testWithTimeout({
  name: "secureDataDir: a loose pre-existing data dir becomes 0700 with 0600 secrets",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-perm-" });
  try {
    await Deno.chmod(dir, 0o755);
    const loose = ["state.db", "state.db-wal", "state.db-shm", "raft.db", "raft.db-wal"]
      .concat(["node.json", "admin.token"]);
    for (const f of loose) await Deno.writeTextFile(join(dir, f), "x", { mode: 0o644 });
    await Deno.mkdir(join(dir, "snapshots"), { mode: 0o755 });
    // The CA certificate is public by contract and stays as it is.
    await Deno.writeTextFile(join(dir, "ca.crt"), "cert", { mode: 0o644 });
    await Deno.chmod(join(dir, "ca.crt"), 0o644);
    for (const f of loose) await Deno.chmod(join(dir, f), 0o644);

    const changed = await secureDataDir(dir);
    assertEquals(await modeOf(dir), 0o700);
    assertEquals(await modeOf(join(dir, "snapshots")), 0o700);
    for (const f of loose) assertEquals(await modeOf(join(dir, f)), 0o600, f);
    assertEquals(await modeOf(join(dir, "ca.crt")), 0o644);
    assertEquals(changed.length, loose.length + 2);
    assertEquals(await secureDataDir(dir), [], "a second pass changes nothing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "ensurePrivateFileSync: SQLite's -wal and -shm inherit the database's 0600",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-perm-" });
  try {
    const path = join(dir, "raft.db");
    ensurePrivateFileSync(path);
    const db = new DatabaseSync(path);
    db.exec("PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);");
    for (const f of ["raft.db", "raft.db-wal", "raft.db-shm"]) {
      assertEquals(await modeOf(join(dir, f)), 0o600, f);
    }
    db.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
