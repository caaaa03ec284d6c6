import { join } from "node:path";
import { assertEquals } from "../../core/testing/assert.ts";
import type { ImageRecord, VmRecord } from "../../core/fsm/mod.ts";
import { BlobStore } from "./blob_store.ts";
import { DirPool } from "./dir_pool.ts";
import { findOrphans, sweepDataDir } from "./sweep.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const MiB = 1024 * 1024;
const bytes = (s: string) => ReadableStream.from([new TextEncoder().encode(s)]);

testWithTimeout({
  name: "start-up sweep removes temp files; orphaned volumes and blobs are reported, not deleted",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dataDir = await Deno.makeTempDir();
  const pool = await new DirPool(join(dataDir, "pool")).init();
  const blobs = await new BlobStore(join(dataDir, "blobs")).init();
  await Deno.mkdir(join(dataDir, "vms", "v1"), { recursive: true });
  await Deno.mkdir(join(dataDir, "snapshots"));
  const leftovers = [
    join(dataDir, ".tmp-node.json-1"),
    join(dataDir, "node.json.tmp-0b5a1f5e-9a5e-4bd4-9b0c-3c2f4f0a7d11"),
    join(dataDir, "snapshots", ".tmp-snap-1-5.json-2"),
    join(dataDir, "blobs", ".tmp-3"),
    join(dataDir, "pool", ".tmp-4.qcow2"),
    join(dataDir, "vms", "v1", "seed.iso.tmp"),
  ];
  for (const f of leftovers) await Deno.writeTextFile(f, "half");
  await Deno.writeTextFile(join(dataDir, "node.json"), "{}");

  assertEquals((await sweepDataDir(dataDir)).sort(), leftovers.sort());
  assertEquals(await Deno.readTextFile(join(dataDir, "node.json")), "{}");

  await pool.create("v1-root", MiB);
  await pool.create("base", MiB);
  await pool.cloneLinked("base", "kept-clone");
  await pool.create("lost", MiB);
  const used = await blobs.put(bytes("kernel"));
  const stray = await blobs.put(bytes("stray"));
  const state = {
    vms: () => [{ name: "v1", disks: [{ volume: "v1-root" }] }] as unknown as VmRecord[],
    images: () => [{ name: "i", kernel: used }] as unknown as ImageRecord[],
  };
  const orphans = await findOrphans(pool, blobs, state);
  // "base" backs a volume, so it is in use even though no VM names it.
  assertEquals(orphans, { volumes: ["kept-clone", "lost"], blobs: [stray.sha256] });
  assertEquals((await pool.list()).length, 4, "nothing was deleted");
});
