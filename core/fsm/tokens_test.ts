/** API tokens in the state machine: names, roles, expiry, revoke, rotate, the cache, old data. */
import { StateMachine } from "./state_machine.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { Command } from "./commands.ts";
import type { Entry } from "../raft/types.ts";
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

let idx = 0;
const entry = (c: Command | Record<string, unknown>): Entry => ({
  index: ++idx,
  term: 1,
  type: "normal",
  data: JSON.stringify(c),
});

async function fresh(): Promise<StateMachine> {
  idx = 0;
  const fsm = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  apply(fsm, {
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "n1", url: "http://a" },
    adminTokenHash: "h-admin",
    config: DEFAULT_CONFIG,
    at: 1,
  });
  return fsm;
}

function apply(fsm: StateMachine, c: Command | Record<string, unknown>) {
  const e = entry(c);
  return fsm.applyEntries([e]).get(e.index)!;
}

const create = (
  name: string,
  hash: string,
  role: string,
  at: number,
  expiresAt?: number | null,
) => ({
  op: "apiToken.create",
  hash,
  name,
  role,
  expiresAt,
  by: "admin",
  at,
});

testWithTimeout({
  name: "tokens: create, check, expiry at the caller's clock",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const fsm = await fresh();
  assertEquals(fsm.checkApiToken("h-admin", 5), {
    ok: true,
    principal: { name: "admin", role: "admin" },
  });
  assert(apply(fsm, create("ci", "h-ci", "viewer", 10, 1_010)).ok);
  assertEquals(fsm.checkApiToken("h-ci", 1_009), {
    ok: true,
    principal: { name: "ci", role: "viewer" },
  });
  // Expired at exactly expiresAt, and stays expired even though the check above cached it.
  const late = fsm.checkApiToken("h-ci", 1_010);
  assert(!late.ok && late.reason === "expired", JSON.stringify(late));
  assertEquals(fsm.checkApiToken("h-nope", 5), { ok: false, reason: "unknown" });
  const listed = fsm.apiTokens().map((t) => [t.name, t.role, t.expiresAt]);
  assertEquals(listed, [["admin", "admin", null], ["ci", "viewer", new Date(1_010).toISOString()]]);
  assert(!JSON.stringify(fsm.apiTokens()).includes("h-ci"), "listings never show the hash");
  fsm.close();
});

testWithTimeout({
  name: "tokens: names are unique and validated, roles checked",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const fsm = await fresh();
  assert(apply(fsm, create("ci", "h1", "operator", 10)).ok);
  const dup = apply(fsm, create("ci", "h2", "viewer", 11));
  assert(!dup.ok && dup.error.code === "conflict", "a live token's name is taken");
  assertEquals(fsm.checkApiToken("h2", 12).ok, false, "the refused token does not authenticate");
  for (const bad of ["", "Upper", "-x", "a b", "x".repeat(64), "ä"]) {
    const r = apply(fsm, create(bad, "h3", "viewer", 12));
    assert(!r.ok && r.error.code === "validation", `name ${JSON.stringify(bad)}`);
  }
  const role = apply(fsm, create("r", "h4", "root", 12));
  assert(!role.ok && role.error.code === "validation");
  const past = apply(fsm, create("p", "h5", "viewer", 12, 12));
  assert(!past.ok && past.error.code === "validation", "an expiry not after now is refused");
  // An expired token's name can be reused: the old secret stays refused.
  assert(apply(fsm, create("tmp", "h6", "viewer", 20, 30)).ok);
  assert(apply(fsm, create("tmp", "h7", "admin", 40)).ok);
  assertEquals(fsm.checkApiToken("h6", 41), { ok: false, reason: "unknown" });
  assertEquals(fsm.checkApiToken("h7", 41).ok, true);
  fsm.close();
});

testWithTimeout({
  name: "tokens: revoke and rotate take effect at once, cache included",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const fsm = await fresh();
  assert(apply(fsm, create("ci", "h-ci", "operator", 10)).ok);
  assert(fsm.checkApiToken("h-ci", 11).ok, "cached now");
  assert(apply(fsm, { op: "apiToken.revoke", name: "ci", by: "admin", at: 12 }).ok);
  assertEquals(fsm.checkApiToken("h-ci", 13), { ok: false, reason: "unknown" });
  const gone = apply(fsm, { op: "apiToken.revoke", name: "ci", by: "admin", at: 14 });
  assert(!gone.ok && gone.error.code === "not_found");

  assert(fsm.checkApiToken("h-admin", 15).ok, "cached now");
  const last = apply(fsm, { op: "apiToken.revoke", name: "admin", by: "admin", at: 16 });
  assert(!last.ok && last.error.code === "conflict", "the last admin token cannot be revoked");
  const r = apply(fsm, {
    op: "apiToken.rotate",
    name: "admin",
    hash: "h-admin2",
    by: "admin",
    at: 17,
  });
  assert(r.ok);
  assertEquals(fsm.checkApiToken("h-admin", 18), { ok: false, reason: "unknown" });
  assertEquals(fsm.checkApiToken("h-admin2", 18), {
    ok: true,
    principal: { name: "admin", role: "admin" },
  });
  // A rotation keeps the expiry unless given a new one; an expired token needs a new one.
  assert(apply(fsm, create("short", "s1", "viewer", 20, 100)).ok);
  assert(apply(fsm, { op: "apiToken.rotate", name: "short", hash: "s2", by: "a", at: 30 }).ok);
  assertEquals(fsm.apiToken("short")?.expiresAt, new Date(100).toISOString());
  const stale = apply(fsm, { op: "apiToken.rotate", name: "short", hash: "s3", by: "a", at: 200 });
  assert(!stale.ok && stale.error.code === "validation");
  assert(
    apply(fsm, {
      op: "apiToken.rotate",
      name: "short",
      hash: "s4",
      expiresAt: 500,
      by: "a",
      at: 200,
    }).ok,
  );
  assertEquals(fsm.checkApiToken("s4", 300).ok, true);
  fsm.close();
});

testWithTimeout({
  name: "tokens: snapshots carry expiry; old databases and snapshots still load",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const fsm = await fresh();
  assert(apply(fsm, create("ci", "h-ci", "viewer", 10, 1_000)).ok);
  const other = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  other.restore(fsm.snapshotData(), fsm.appliedIndex());
  assertEquals(other.apiTokens(), fsm.apiTokens());
  assertEquals(other.checkApiToken("h-ci", 1_000).ok, false);
  other.close();

  // A snapshot from before expiry existed: rows without the new columns never expire.
  const old = [
    JSON.stringify({ format: 2, clusterId: "c1" }),
    JSON.stringify(["api_tokens", { hash: "h-old", name: "admin", role: "admin", created_at: 1 }]),
    "",
  ].join("\n");
  const third = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  third.restore(old, 5);
  assertEquals(third.checkApiToken("h-old", Date.now()).ok, true);
  third.close();

  // A database file written before the columns existed gets them on open.
  const path = join(await Deno.makeTempDir(), "state.db");
  const db = new DatabaseSync(path);
  db.exec(
    "CREATE TABLE api_tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created_at INTEGER NOT NULL);" +
      "INSERT INTO api_tokens VALUES ('h-legacy', 'admin', 'admin', 1);",
  );
  db.close();
  const legacy = new StateMachine(path);
  assertEquals(legacy.apiToken("admin")?.expiresAt, null);
  idx = 0;
  assert(apply(legacy, create("ci", "h2", "viewer", 10, 50)).ok);
  assertEquals(legacy.checkApiToken("h2", 60).ok, false);
  legacy.close();
  fsm.close();
});
