import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { renameDurably, sweepTempFiles, writeAll, writeFileDurably } from "./files.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

testWithTimeout({
  name: "writeAll keeps writing after short writes and fails on a zero write",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const got: number[] = [];
  const shortWriter = {
    write: (p: Uint8Array) => {
      const n = Math.min(3, p.length);
      got.push(...p.subarray(0, n));
      return Promise.resolve(n);
    },
  };
  const data = Uint8Array.from({ length: 20 }, (_, i) => i);
  await writeAll(shortWriter, data);
  assertEquals(got, [...data]);
  await assertRejects(
    () => writeAll({ write: () => Promise.resolve(0) }, data),
    Deno.errors.WriteZero,
  );
});

testWithTimeout({
  name: "writeFileDurably replaces the file whole and leaves no temporary file",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "node.json");
  await writeFileDurably(path, "old");
  await writeFileDurably(path, "x".repeat(1 << 20));
  assertEquals((await Deno.readTextFile(path)).length, 1 << 20);
  assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["node.json"]);
});

testWithTimeout(
  { name: "the startup sweep removes temporary files only", timeoutMs: 2 * MINUTE },
  async () => {
    const dir = await Deno.makeTempDir();
    for (const f of [".tmp-node.json-1", ".tmp-abc.qcow2", "keep.qcow2", "seed.iso.tmp"]) {
      await Deno.writeTextFile(join(dir, f), "x");
    }
    const removed = await sweepTempFiles(dir, (n) => n.endsWith(".tmp"));
    assertEquals(removed.map((p) => p.slice(dir.length + 1)).sort(), [
      ".tmp-abc.qcow2",
      ".tmp-node.json-1",
      "seed.iso.tmp",
    ]);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["keep.qcow2"]);
    assertEquals(await sweepTempFiles(join(dir, "missing")), []);
  },
);

/**
 * Which system calls a durable rename makes, seen by strace on a real process:
 * the file's data is synced before the rename, the directory after it.
 */
testWithTimeout({
  name: "renameDurably fsyncs the file before and the directory after the rename",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir();
  const tmp = join(dir, ".tmp-x");
  const final = join(dir, "x");
  await Deno.writeTextFile(tmp, "data");
  const trace = join(await Deno.makeTempDir(), "trace");
  const script = `import { renameDurably } from ${
    JSON.stringify(import.meta.resolve("./files.ts"))
  };
await renameDurably(${JSON.stringify(tmp)}, ${JSON.stringify(final)});`;
  const out = await new Deno.Command("strace", {
    args: [
      "-f",
      "-e",
      "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
      "-o",
      trace,
      Deno.execPath(),
      "eval",
      script,
    ],
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  // Deno runs the sync on a duplicated descriptor, so calls are matched by order.
  const lines = (await Deno.readTextFile(trace)).split("\n");
  const openOf = (path: string, from = 0) =>
    lines.findIndex((l, i) => i >= from && l.includes(`openat(AT_FDCWD, "${path}"`));
  const syncAfter = (from: number) =>
    lines.findIndex((l, i) => i > from && /\bf(data)?sync\(\d+\)\s+= 0/.test(l));
  const rename = lines.findIndex((l) => l.includes(`"${tmp}", "${final}"`));
  assert(rename >= 0, "the rename happened");
  const fileSync = syncAfter(openOf(tmp));
  assert(openOf(tmp) >= 0 && fileSync > 0 && fileSync < rename, "file synced before the rename");
  const dirOpen = openOf(dir, rename);
  assert(dirOpen > rename && syncAfter(dirOpen) > dirOpen, "directory synced after the rename");
});

testWithTimeout({
  name: "renameDurably of a missing file fails without creating the target",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir();
  await assertRejects(() => renameDurably(join(dir, "nope"), join(dir, "x")), Deno.errors.NotFound);
  assertEquals([...Deno.readDirSync(dir)].length, 0);
});
