import { DirPool } from "./dir_pool.ts";
import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { ConflictError, ValidationError } from "../../core/errors/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const MiB = 1024 * 1024;

/** Runs qemu-io against a volume; true when the command (e.g. a pattern read) succeeds. */
async function qemuIo(path: string, cmd: string): Promise<boolean> {
  const out = await new Deno.Command("qemu-io", {
    args: ["-c", cmd, path],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  return out.success && !/Pattern verification failed|error/i.test(text);
}

async function pool(): Promise<DirPool> {
  return await new DirPool(await Deno.makeTempDir({ prefix: "novactl-pool-" })).init();
}

testWithTimeout(
  { name: "create, resize (grow only) and delete a volume", timeoutMs: 2 * MINUTE },
  async () => {
    const p = await pool();
    const v = await p.create("disk0", 64 * MiB);
    assertEquals(v.virtualBytes, 64 * MiB);
    assertEquals((await p.resize("disk0", 128 * MiB)).virtualBytes, 128 * MiB);
    await assertRejects(() => p.resize("disk0", 32 * MiB), ValidationError);
    await assertRejects(() => p.create("disk0", 64 * MiB), ConflictError);
    await p.delete("disk0");
    assertEquals(await p.list(), []);
  },
);

testWithTimeout({
  name: "linked clone shares the base's data, writes stay in the clone, the base cannot be deleted",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const p = await pool();
  const base = await p.create("base", 16 * MiB);
  assert(await qemuIo(base.path, "write -P 0xab 0 64k"));
  const clone = await p.cloneLinked("base", "clone");
  assertEquals(clone.backing, "base");
  assert(await qemuIo(clone.path, "read -P 0xab 0 64k"), "clone sees the base's data");
  assert(await qemuIo(clone.path, "write -P 0xcd 0 64k"));
  assert(!(await qemuIo(clone.path, "read -P 0xab 0 64k")), "the clone now holds its own data");
  assert(await qemuIo(base.path, "read -P 0xab 0 64k"), "base is unchanged by writes to the clone");
  await assertRejects(() => p.delete("base"), ConflictError);
  await p.delete("clone");
  await p.delete("base");
});

testWithTimeout(
  { name: "full clone is independent of its source", timeoutMs: 2 * MINUTE },
  async () => {
    const p = await pool();
    const base = await p.create("base", 16 * MiB);
    assert(await qemuIo(base.path, "write -P 0x5a 0 64k"));
    const full = await p.cloneFull("base", "copy");
    assertEquals(full.backing, null);
    await p.delete("base");
    assert(
      await qemuIo(full.path, "read -P 0x5a 0 64k"),
      "copy keeps the data after the source is gone",
    );
    const usage = await p.usage();
    assertEquals(usage.volumes, 1);
    assert(usage.freeBytes > 0);
  },
);

testWithTimeout({
  name: "bad names and sizes are refused with the field named",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const p = await pool();
  await assertRejects(() => p.create("../evil", 16 * MiB), /volume/);
  await assertRejects(() => p.create("zero", 0), /size/);
  await assertRejects(() => p.create("huge", 2 ** 53), /size/);
  assertEquals(await p.list(), []);
});

testWithTimeout({
  name: "volumes deleted concurrently: each delete's listing skips the files the others removed",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const p = await pool();
  const names = Array.from({ length: 40 }, (_, i) => `v${i}`);
  for (const n of names) await p.create(n, 16 * MiB);
  // Every delete lists the pool (to refuse deleting a linked clone's base) while the others remove files.
  const results = await Promise.allSettled(names.map((n) => p.delete(n)));
  assertEquals(results.filter((r) => r.status === "rejected").map((r) => String(r.reason)), []);
  assertEquals(await p.list(), []);
});
