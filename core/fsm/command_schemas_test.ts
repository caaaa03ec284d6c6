import {
  GUEST_LIMITS,
  guestInfoSchema,
  INVENTORY_LIMITS,
  inventorySchema,
  isPeerOp,
  LABEL_LIMITS,
  labelKeyProblem,
  labelsSchema,
  MAX_OPERATION_JSON_BYTES,
  MAX_REASON_CHARS,
  parsePeerCommand,
} from "./command_schemas.ts";
import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { ValidationError } from "../errors/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE };

const inventory = {
  cpus: 2,
  memoryMiB: 2048,
  diskGiB: 100,
  diskFreeGiB: 50,
  accel: "tcg" as const,
  arch: "x86_64",
  kernel: "6.1.0",
  hostname: "h1",
  version: "0.1.0",
};

/** The fields a refused command names. */
function fieldsOf(fn: () => unknown): string[] {
  const err = assertThrows(fn, ValidationError) as ValidationError;
  return err.issues.map((i) => i.field);
}

testWithTimeout({ name: "labels: Kubernetes-like keys, printable values", ...opts }, () => {
  for (const key of ["zone", "disk", "a.b_c-d", "example.com/tier", "k8s.io/x", "A1"]) {
    assertEquals(labelKeyProblem(key), null, key);
  }
  for (const key of ["", "-a", "a-", "a b", "Example.com/x", "/x", "a/", "x".repeat(64), "é"]) {
    assert(labelKeyProblem(key) !== null, JSON.stringify(key));
  }
  assertEquals(labelKeyProblem("x".repeat(63)), null);
  assertEquals(labelKeyProblem(`${"a".repeat(253)}/x`), null);
  assert(labelKeyProblem(`${"a".repeat(254)}/x`) !== null);

  assert(labelsSchema.safeParse({ team: "a=b", note: "ünïcode ok" }).success);
  assert(labelsSchema.safeParse({ k: "v".repeat(LABEL_LIMITS.valueChars) }).success);
  const long = labelsSchema.safeParse({ k: "v".repeat(LABEL_LIMITS.valueChars + 1) });
  assert(!long.success);
  assertEquals(long.error.issues[0].path, ["k"]);
  assert(!labelsSchema.safeParse({ k: "line\nbreak" }).success);
  const badKey = labelsSchema.safeParse({ "bad key": "v" });
  assert(!badKey.success);
  assertEquals(badKey.error.issues[0].path, ["bad key"]);
});

testWithTimeout({ name: "labels: count and total size are capped", ...opts }, () => {
  const many = (n: number, value = "v") =>
    Object.fromEntries(Array.from({ length: n }, (_, i) => [`label${i}`, value]));
  assert(labelsSchema.safeParse(many(LABEL_LIMITS.count)).success);
  const tooMany = labelsSchema.safeParse(many(LABEL_LIMITS.count + 1));
  assert(!tooMany.success);
  assert(tooMany.error.issues[0].message.includes("at most 64 labels"));
  // 64 labels of 253 chars each: every one valid, together over 16 KiB.
  const big = labelsSchema.safeParse(many(LABEL_LIMITS.count, "v".repeat(253)));
  assert(!big.success);
  assert(big.error.issues[0].message.includes("bytes"), big.error.issues[0].message);
  // The review's 5.6 MB: refused with a single issue, no per-key flood.
  const huge = labelsSchema.safeParse(many(20_000, "v".repeat(250)));
  assert(!huge.success);
  assertEquals(huge.error.issues.length, 1);
});

testWithTimeout({ name: "inventory: strings capped, numbers finite and bounded", ...opts }, () => {
  assert(inventorySchema.safeParse(inventory).success);
  assert(inventorySchema.safeParse({ ...inventory, accel: null }).success);
  const bad: Record<string, unknown>[] = [
    { hostname: "h".repeat(INVENTORY_LIMITS.hostnameChars + 1) },
    { kernel: "k".repeat(INVENTORY_LIMITS.kernelChars + 1) },
    { version: "v".repeat(INVENTORY_LIMITS.versionChars + 1) },
    { arch: "a".repeat(INVENTORY_LIMITS.archChars + 1) },
    { hostname: "evil\u001b[2J" },
    { cpus: 1.5 },
    { cpus: -1 },
    { memoryMiB: Infinity },
    { memoryMiB: NaN },
    { diskGiB: 2 ** 40 },
    { extra: "field" },
  ];
  for (const change of bad) {
    assert(!inventorySchema.safeParse({ ...inventory, ...change }).success, JSON.stringify(change));
  }
});

testWithTimeout({ name: "guest info: what the guest said is capped", ...opts }, () => {
  const ok = { agent: "ok", os: { id: "alpine" }, interfaces: [{ name: "eth0", addresses: [] }] };
  assert(guestInfoSchema.safeParse(ok).success);
  assert(guestInfoSchema.safeParse({ agent: "absent" }).success);
  const iface = (n: number) => ({ name: `e${n}`, addresses: ["10.0.0.1/24"] });
  const cases = [
    { ...ok, os: { id: "x".repeat(GUEST_LIMITS.stringChars + 1) } },
    { ...ok, interfaces: Array.from({ length: GUEST_LIMITS.interfaces + 1 }, (_, i) => iface(i)) },
    {
      ...ok,
      interfaces: [{
        name: "e",
        addresses: Array(GUEST_LIMITS.addressesPerInterface + 1).fill("10.0.0.1/24"),
      }],
    },
    { ...ok, interfaces: [{ name: "e\n", addresses: [] }] },
  ];
  for (const c of cases) assert(!guestInfoSchema.safeParse(c).success);
});

testWithTimeout({ name: "peer commands: schema-checked, fields named", ...opts }, () => {
  const upsert = {
    op: "node.upsert",
    name: "n2",
    url: "http://127.0.0.1:7071",
    inventory,
    labels: { zone: "a" },
    at: 1,
  };
  assertEquals(parsePeerCommand(upsert) as unknown, upsert);
  const labels = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, "v"]));
  assertEquals(fieldsOf(() => parsePeerCommand({ ...upsert, labels })), ["command.labels"]);
  assertEquals(
    fieldsOf(() => parsePeerCommand({ ...upsert, inventory: { ...inventory, cpus: "2" } })),
    ["command.inventory.cpus"],
  );
  assertEquals(fieldsOf(() => parsePeerCommand({ ...upsert, name: 7 })), ["command.name"]);
  assertEquals(fieldsOf(() => parsePeerCommand({ ...upsert, smuggled: 1 })), ["command"]);
  assertEquals(fieldsOf(() => parsePeerCommand({ op: "apiToken.create" })), ["command.op"]);
  assertEquals(fieldsOf(() => parsePeerCommand(null)), ["command.op"]);
  assert(!isPeerOp("apiToken.create") && !isPeerOp("cluster.init") && isPeerOp("vm.observed"));

  const observed = {
    op: "vm.observed",
    name: "web",
    node: "n1",
    state: "failed",
    reason: "r".repeat(100_000),
    guest: null,
    at: 1,
  };
  // A long reason (QEMU's stderr) is cut, not refused: the state report must not be lost.
  const parsed = parsePeerCommand(observed) as { reason: string };
  assertEquals(parsed.reason.length, MAX_REASON_CHARS);
  assertEquals(
    fieldsOf(() => parsePeerCommand({ ...observed, state: "exploded" })),
    ["command.state"],
  );
  for (const display of ["vga", "none", null]) {
    assertEquals(
      (parsePeerCommand({ ...observed, display }) as { display: unknown }).display,
      display,
    );
  }
  assertEquals(
    fieldsOf(() => parsePeerCommand({ ...observed, display: "cirrus" })),
    ["command.display"],
  );
  assertEquals(
    fieldsOf(() =>
      parsePeerCommand({ ...observed, guest: { agent: "ok", os: { id: "x".repeat(1000) } } })
    ),
    ["command.guest.os.id"],
  );

  const progress = { blob: "x".repeat(MAX_OPERATION_JSON_BYTES) };
  assertEquals(
    fieldsOf(() => parsePeerCommand({ op: "operation.update", id: "op1", progress, at: 1 })),
    ["command.progress"],
  );
  assert(parsePeerCommand({ op: "operation.update", id: "op1", progress: { pct: 5 }, at: 1 }));
  assertEquals(
    fieldsOf(() =>
      parsePeerCommand({
        op: "vm.update",
        name: "web",
        changes: { cpus: 2, labels: { "bad key": "v" } },
        at: 1,
        by: "host:n1",
      })
    ),
    ["command.changes.labels.bad key"],
  );
});
