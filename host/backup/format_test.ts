/**
 * The backup format on its own: block checksums of a file (hashed once, on two threads), a
 * manifest whose recorded sha256 guards it, and verify finding the one flipped byte.
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { assert, assertEquals } from "../../core/testing/assert.ts";
import type { BackupRecord } from "../../core/fsm/mod.ts";
import { ValidationError } from "../../core/errors/mod.ts";
import {
  BLOCK_BYTES,
  blockListSha256,
  checkChain,
  checksumFile,
  type Manifest,
  MANIFEST_FORMAT,
  readChainTop,
  readManifest,
  stageManifest,
  verifyBackup,
  writeManifest,
} from "./format.ts";

Deno.test("checksums: this thread alone and with the worker agree, block by block", async () => {
  const file = join(await Deno.makeTempDir(), "f.qcow2");
  // 3 chunks of 64 blocks and a short last block: the two threads share the chunks.
  const data = new Uint8Array(150 * BLOCK_BYTES + 5);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 16)) & 0xff;
  await Deno.writeFile(file, data);
  const hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
  const blocks = Array.from(
    { length: 151 },
    (_, i) => hex(data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES)),
  );
  const want = {
    bytes: data.length,
    blocks,
    blocksSha256: hex(new TextEncoder().encode(blocks.map((b) => b + "\n").join(""))),
  };
  assertEquals(blockListSha256(blocks), want.blocksSha256);
  let seen = 0;
  assertEquals(await checksumFile(file, { onBytes: (n) => seen += n }), want);
  assertEquals(seen, data.length);
  seen = 0;
  assertEquals(await checksumFile(file, { inlineBytes: 0, onBytes: (n) => seen += n }), want);
  assertEquals(seen, data.length);
  seen = 0;
  const workerOnly = { inlineBytes: 0, workerOnly: true, onBytes: (n: number) => seen += n };
  assertEquals(await checksumFile(file, workerOnly), want);
  assertEquals(seen, data.length);
});

Deno.test("checksums: the README's offline recipe gives the block list's digest", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "f.qcow2");
  const data = new Uint8Array(3 * BLOCK_BYTES + 99).map((_, i) => (i * 13) & 0xff);
  await Deno.writeFile(file, data);
  const out = await new Deno.Command("sh", {
    args: ["-c", 'split -b 65536 --filter=sha256sum "$1" | cut -c1-64 | sha256sum', "sh", file],
    cwd: dir,
    stdout: "piped",
  }).output();
  assert(out.success);
  const got = new TextDecoder().decode(out.stdout).slice(0, 64);
  assertEquals(got, (await checksumFile(file)).blocksSha256);
});

async function setUp(): Promise<{ root: string; record: BackupRecord; file: string }> {
  const root = await Deno.makeTempDir();
  await Deno.mkdir(join(root, "web1"));
  const file = join(root, "web1", "bk-000000000001.root.qcow2");
  const data = new Uint8Array(5 * BLOCK_BYTES + 123);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  await Deno.writeFile(file, data);
  const sums = await checksumFile(file);
  assertEquals(sums.blocks.length, 6);
  assertEquals(sums.bytes, data.length);
  const m: Manifest = {
    format: MANIFEST_FORMAT,
    id: "bk-000000000001",
    vm: "web1",
    vmUuid: "u",
    kind: "full",
    parent: null,
    chain: "bk-000000000001",
    createdAt: new Date().toISOString(),
    node: "h1",
    spec: { image: "i", cpus: 1, memoryMiB: 256 },
    fsFrozen: false,
    freezeMs: null,
    fullReason: null,
    disks: [{
      id: "root",
      file: "bk-000000000001.root.qcow2",
      backing: null,
      virtualBytes: data.length,
      fileBytes: sums.bytes,
      copiedBytes: sums.bytes,
      blocksSha256: sums.blocksSha256,
      blockBytes: BLOCK_BYTES,
      blocks: sums.blocks,
    }],
  };
  const sha = await writeManifest(join(root, "web1"), m);
  const record: BackupRecord = {
    id: m.id,
    vm: "web1",
    target: "t1",
    kind: "full",
    parent: null,
    chain: m.id,
    dir: "web1",
    manifest: "bk-000000000001.manifest.json",
    manifestSha256: sha,
    disks: [],
    fullReason: null,
    node: "h1",
    createdAt: 0,
  };
  return { root, record, file };
}

Deno.test("verify: a clean backup passes; one flipped byte is found in its block", async () => {
  const { root, record, file } = await setUp();
  const clean = await verifyBackup(root, record);
  assertEquals(clean.badBlocks, []);
  assertEquals(clean.badFiles, []);
  assertEquals(clean.blocks, 6);
  const f = await Deno.open(file, { read: true, write: true });
  const at = 3 * BLOCK_BYTES + 77;
  const one = new Uint8Array(1);
  await f.seek(at, Deno.SeekMode.Start);
  await f.read(one);
  one[0] ^= 0x80;
  await f.seek(at, Deno.SeekMode.Start);
  await f.write(one);
  f.close();
  const bad = await verifyBackup(root, record);
  assertEquals(bad.badBlocks, [{
    file: "bk-000000000001.root.qcow2",
    index: 3,
    offset: 3 * BLOCK_BYTES,
  }]);
  assertEquals(bad.badFiles, ["bk-000000000001.root.qcow2"]);
});

Deno.test("verify: a format 1 backup (whole-file sha256, no list digest) is checked by its blocks", async () => {
  const { root, record, file } = await setUp();
  const path = join(root, "web1", record.manifest);
  const m: Manifest = JSON.parse(await Deno.readTextFile(path));
  m.format = "novactl-backup/1";
  const whole = createHash("sha256").update(await Deno.readFile(file)).digest("hex");
  m.disks = m.disks.map(({ blocksSha256: _, ...d }) => ({ ...d, sha256: whole }));
  const v1 = { ...record, manifestSha256: await writeManifest(join(root, "web1"), m) };
  assertEquals((await verifyBackup(root, v1)).badBlocks, []);
  const f = await Deno.open(file, { write: true });
  await f.seek(5 * BLOCK_BYTES + 100, Deno.SeekMode.Start);
  await f.write(new Uint8Array([1, 2, 3]));
  f.close();
  const bad = await verifyBackup(root, v1);
  assertEquals(bad.badBlocks.map((b) => b.index), [5]);
  assertEquals(bad.badFiles, [m.disks[0].file]);
});

Deno.test("manifest: changed, unparsable or missing ones are refused, naming the backup", async () => {
  const { root, record } = await setUp();
  assertEquals((await readManifest(root, record)).id, record.id);
  const path = join(root, "web1", record.manifest);
  const text = await Deno.readTextFile(path);
  for (
    const [broken, why] of [
      [text.replace('"kind":"full"', '"kind":"incremental"'), /corrupt or was changed/],
      [text.slice(0, 20), /corrupt or was changed/],
    ] as const
  ) {
    await Deno.writeTextFile(path, broken);
    const err = await readManifest(root, record).then(() => null, (e) => e);
    assert(err instanceof ValidationError, String(err));
    assert(why.test(err.message) && err.message.includes(record.id), err.message);
  }
  await Deno.remove(path);
  const gone = await readManifest(root, record).then(() => null, (e) => e);
  assert(/cannot be read/.test(String(gone?.message)), String(gone));
});

Deno.test("chain check: as readChainTop, a changed manifest, a missing or resized file is refused", async () => {
  const { root, record, file } = await setUp();
  const size = (await Deno.stat(file)).size;
  const b: BackupRecord = {
    ...record,
    disks: [{
      id: "root",
      file: "bk-000000000001.root.qcow2",
      virtualBytes: size,
      fileBytes: size,
      copiedBytes: size,
    }],
  };
  await checkChain(root, [b]);
  assertEquals((await readChainTop(root, [b])).id, b.id);
  const refusals = async (why: RegExp) => {
    for (const check of [checkChain, readChainTop]) {
      const err = await check(root, [b]).then(() => null, (e) => e);
      assert(err instanceof ValidationError, `${check.name}: ${err}`);
      assert(why.test(err.message) && err.message.includes(b.id), err.message);
    }
  };
  await Deno.truncate(file, size - 1);
  await refusals(/has \d+ bytes, its manifest says/);
  await Deno.remove(file);
  await refusals(/is missing/);
  await Deno.writeTextFile(join(root, "web1", b.manifest), "{}");
  await refusals(/corrupt or was changed/);
});

Deno.test("manifest: a staged one has no name until committed; discarded, nothing is left", async () => {
  const { root, record } = await setUp();
  const dir = join(root, "web1");
  const path = join(dir, record.manifest);
  const m = await readManifest(root, record);
  const other = { ...m, id: "bk-000000000002" };
  const names = async () => {
    const out = [];
    for await (const e of Deno.readDir(dir)) out.push(e.name);
    return out.sort();
  };
  const before = await names();
  const staged = await stageManifest(dir, other);
  const tmp = (await names()).filter((n) => !before.includes(n));
  assertEquals(tmp.length, 1);
  assert(tmp[0].startsWith(".tmp-bk-000000000002.manifest.json"), tmp[0]);
  assertEquals(
    createHash("sha256").update(await Deno.readFile(join(dir, tmp[0]))).digest("hex"),
    staged.sha256,
  );
  await staged.commit();
  assertEquals(await names(), [...before, "bk-000000000002.manifest.json"].sort());
  const read = await readManifest(root, {
    ...record,
    id: other.id,
    manifest: "bk-000000000002.manifest.json",
    manifestSha256: staged.sha256,
  });
  assertEquals(read.id, other.id);
  const dropped = await stageManifest(dir, { ...m, id: "bk-000000000003" });
  await dropped.discard();
  assertEquals(await names(), [...before, "bk-000000000002.manifest.json"].sort());
  assert((await Deno.stat(path)).isFile);
});
