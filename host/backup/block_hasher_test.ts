/**
 * The hashing worker started ahead of need: reused for file after file (small ones too),
 * each block's sha256 as this thread alone makes it; an abort ends it, and a closed one
 * leaves the caller's thread to hash everything.
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { BLOCK_BYTES, checksumFile } from "./format.ts";
import { BlockHasher, HasherPool } from "./block_hasher.ts";

const hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function file(dir: string, name: string, bytes: number, seed: number) {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = (i * seed + (i >> 12)) & 0xff;
  const path = join(dir, name);
  await Deno.writeFile(path, data);
  const blocks = [];
  for (let off = 0; off < bytes; off += BLOCK_BYTES) {
    blocks.push(hex(data.subarray(off, off + BLOCK_BYTES)));
  }
  return { path, blocks };
}

Deno.test("hasher: one worker hashes file after file, small or not, block by block", async () => {
  const dir = await Deno.makeTempDir();
  const hasher = BlockHasher.start();
  try {
    // Above and below a chunk (64 blocks), and a short last block.
    for (const [i, bytes] of [200 * BLOCK_BYTES + 9, 3 * BLOCK_BYTES, 70 * BLOCK_BYTES].entries()) {
      const f = await file(dir, `f${i}`, bytes, 7 + i * 6);
      let seen = 0;
      const sums = await checksumFile(f.path, { hasher, onBytes: (n) => seen += n });
      assertEquals(sums.blocks, f.blocks);
      assertEquals(sums.bytes, bytes);
      assertEquals(seen, bytes);
      // The worker alone, for the same file: the same hashes.
      const alone = await checksumFile(f.path, { hasher, workerOnly: true });
      assertEquals(alone.blocks, f.blocks);
    }
    assert(hasher.alive);
  } finally {
    hasher.close();
  }
});

Deno.test("hasher: an abort ends it; a closed one leaves the caller to hash alone", async () => {
  const dir = await Deno.makeTempDir();
  const f = await file(dir, "f", 300 * BLOCK_BYTES, 11);
  const hasher = BlockHasher.start();
  const ctl = new AbortController();
  ctl.abort(new Error("stop"));
  const err = await checksumFile(f.path, { hasher, signal: ctl.signal }).then(() => null, (e) => e);
  assertEquals(err?.message, "stop");
  assert(!hasher.alive);
  const sums = await checksumFile(f.path, { hasher, workerOnly: true });
  assertEquals(sums.blocks, f.blocks);
});

Deno.test("hasher pool: a released worker hashes the next file; a closed one is not handed out", async () => {
  const dir = await Deno.makeTempDir();
  const a = await file(dir, "a", 70 * BLOCK_BYTES, 3);
  const pool = new HasherPool();
  try {
    const first = pool.acquire();
    pool.release(first);
    const again = pool.acquire();
    assert(again === first, "the idle worker is reused");
    assertEquals(pool.started, 1);
    assertEquals(
      (await checksumFile(a.path, { hasher: again, workerOnly: true })).blocks,
      a.blocks,
    );
    again.close(); // as after an abort
    pool.release(again);
    const fresh = pool.acquire();
    assert(fresh !== again && fresh.alive, "a closed worker is dropped");
    assertEquals(pool.started, 2);
    pool.release(fresh);
    fresh.close(); // ends while idle (its thread failed)
    const third = pool.acquire();
    assert(third !== fresh && third.alive, "one that ended while idle is not handed out");
    assertEquals(pool.started, 3);
    pool.close(true); // the node stops while a backup still holds `third`
    pool.release(third);
    assert(!third.alive, "one released after the pool closed ends");
  } finally {
    pool.close(true);
  }
});
