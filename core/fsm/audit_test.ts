import { StateMachine } from "./state_machine.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { Command } from "./commands.ts";
import type { Entry } from "../raft/types.ts";
import { type AuditInput, MAX_FIELD_CHARS } from "./audit.ts";
import { join } from "node:path";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 1);

/** A state machine with its own entry counter, initialised with `config` changes. */
async function machine(config: Record<string, unknown> = {}) {
  let idx = 0;
  const fsm = new StateMachine(join(await Deno.makeTempDir(), "state.db"));
  const apply = (c: Command | Record<string, unknown>) => {
    const e: Entry = { index: ++idx, term: 1, type: "normal", data: JSON.stringify(c) };
    return fsm.applyEntries([e]).get(e.index)!;
  };
  apply({
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "n1", url: "http://a" },
    adminTokenHash: "h",
    config: { ...DEFAULT_CONFIG, ...config },
    at: T0,
  });
  return { fsm, apply };
}

function rec(over: Partial<AuditInput> = {}): AuditInput {
  return {
    at: T0,
    principal: "alice",
    role: "operator",
    source: "10.0.0.7",
    node: "n1",
    requestId: crypto.randomUUID(),
    method: "POST",
    route: "/api/v1/vms",
    path: "/api/v1/vms",
    resource: "vm/web1",
    code: 201,
    ms: 12,
    detail: null,
    ...over,
  };
}

const append = (records: AuditInput[], at = T0) => ({ op: "audit.append", records, at });

testWithTimeout({
  name: "audit: records come back newest first, filtered by since, principal and resource",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, apply } = await machine();
  assert(
    apply(append([
      rec({ at: T0 + 1, principal: "alice", resource: "vm/web1", code: 201 }),
      rec({ at: T0 + 2, principal: "bob", resource: "vm/web2", code: 403 }),
    ])).ok,
  );
  assert(
    apply(append([
      rec({ at: T0 + 3, principal: "system:ha", role: null, method: "SYSTEM", code: null }),
      rec({ at: T0 + 4, principal: "anonymous", role: null, resource: "node/n2", code: 401 }),
    ])).ok,
  );
  const all = fsm.auditEntries();
  assertEquals(all.map((e) => e.at - T0), [4, 3, 2, 1]);
  assertEquals(all[1].code, null);
  assertEquals(all[0].code, 401);
  assertEquals(fsm.auditEntries({ principal: "bob" }).map((e) => e.resource), ["vm/web2"]);
  assertEquals(fsm.auditEntries({ resource: "vm/web1" }).map((e) => e.principal), [
    "system:ha",
    "alice",
  ]);
  assertEquals(fsm.auditEntries({ resource: "vm" }).length, 3, "a bare kind matches every vm/*");
  assertEquals(fsm.auditEntries({ resource: "v" }).length, 0, "a kind is matched whole");
  assertEquals(fsm.auditEntries({ since: T0 + 3 }).map((e) => e.principal), [
    "anonymous",
    "system:ha",
  ]);
  assertEquals(fsm.auditEntries({ limit: 1 }).map((e) => e.principal), ["anonymous"]);
  fsm.close();
});

testWithTimeout({
  name: "audit: audit.keepCount and audit.keepDays prune by the command's time, not the clock",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, apply } = await machine({ "audit.keepCount": 10, "audit.keepDays": 30 });
  for (let i = 0; i < 25; i++) {
    assert(apply(append([rec({ at: T0 + i, principal: `p${i}` })], T0 + i)).ok);
  }
  const kept = fsm.auditEntries({ limit: 1000 });
  assertEquals(kept.length, 10, "only the newest audit.keepCount records stay");
  assertEquals(kept.map((e) => e.principal).at(-1), "p15");
  // A batch stamped 31 days later: every record older than 30 days (by that stamp) goes.
  assert(apply(append([rec({ at: T0 + 31 * DAY, principal: "late" })], T0 + 31 * DAY)).ok);
  assertEquals(fsm.auditEntries({ limit: 1000 }).map((e) => e.principal), ["late"]);
  fsm.close();
});

testWithTimeout({
  name: "audit: a large keepCount prunes in steps of its slack, never below keepCount",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, apply } = await machine({ "audit.keepCount": 200, "audit.keepDays": 0 });
  for (let i = 0; i < 30; i++) {
    apply(append(Array.from({ length: 10 }, (_, j) => rec({ at: T0 + i * 10 + j }))));
    const n = fsm.auditEntries({ limit: 10_000 }).length;
    assert(n >= Math.min(200, (i + 1) * 10) && n <= 202, `kept ${n} after ${(i + 1) * 10}`);
  }
  fsm.close();
});

testWithTimeout({
  name: "audit: replicas applying the same entries hold the same rows, snapshots carry them",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const a = await machine({ "audit.keepCount": 7 });
  const b = await machine({ "audit.keepCount": 7 });
  const batches = Array.from({ length: 6 }, (_, i) =>
    append(
      Array.from({ length: 3 }, (_, j) => rec({ at: T0 + 10 * i + (5 - j), principal: `u${j}` })),
      T0 + 10 * i,
    ));
  for (const cmd of batches) {
    a.apply(cmd);
    b.apply(cmd);
  }
  assertEquals(a.fsm.auditEntries(), b.fsm.auditEntries());
  assertEquals(a.fsm.auditEntries().length, 7);
  const restored = await machine();
  restored.fsm.restore(a.fsm.snapshotData(), 99);
  assertEquals(restored.fsm.auditEntries(), a.fsm.auditEntries());
  for (const m of [a, b, restored]) m.fsm.close();
});

testWithTimeout({
  name: "audit: a malformed batch is rejected whole; over-long text is cut the same everywhere",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { fsm, apply } = await machine();
  const bad = apply(append([rec(), { ...rec(), code: "201" as unknown as number }]));
  assert(!bad.ok, "a record with a text code is refused");
  assertEquals(fsm.auditEntries().length, 0, "and nothing of its batch is kept");
  assert(!apply(append(Array.from({ length: 1001 }, () => rec()))).ok, "too many records");
  assert(apply(append([rec({ path: "/x".repeat(1000) })])).ok);
  assertEquals(fsm.auditEntries()[0].path.length, MAX_FIELD_CHARS);
  fsm.close();
});
