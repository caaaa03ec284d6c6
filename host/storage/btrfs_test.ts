/**
 * The btrfs backend on real btrfs filesystems on loop devices (scripts/btrfs_loop.sh):
 * volumes as subvolumes, clones and snapshots without backing files, send/receive (full,
 * then incremental), loop-backed pools made by the pool, and a path that is not btrfs.
 * Needs root (mount) and btrfs-progs.
 */
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { ValidationError } from "../../core/errors/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { BtrfsPool, fsType } from "./btrfs.ts";
import { HostPools } from "./host_pools.ts";
import { DirPool } from "./dir_pool.ts";
import { imageInfo } from "./qemu_img.ts";

const SCRIPT = new URL("../../scripts/btrfs_loop.sh", import.meta.url).pathname;
const MiB = 2 ** 20;

async function sh(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** A btrfs filesystem on a loop device for the test's duration. */
async function withBtrfs<T>(fn: (mnt: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "nv-btrfs-" });
  try {
    const mnt = (await sh("bash", [SCRIPT, "up", dir, "512M"])).trim().split("\n").pop()!;
    return await fn(mnt);
  } finally {
    await sh("bash", [SCRIPT, "down", dir]);
  }
}

/** Writes `pattern` (a byte) at offset 0 of a qcow2 volume, as a guest would. */
async function writePattern(path: string, pattern: number, len = "1M"): Promise<void> {
  await sh("qemu-io", ["-f", "qcow2", "-c", `write -P ${pattern} 0 ${len}`, path]);
}

/** Whether the volume holds `pattern` at offset 0 (qemu-io's read -P fails otherwise). */
async function holds(path: string, pattern: number, len = "1M"): Promise<boolean> {
  const out = await new Deno.Command("qemu-io", {
    args: ["-f", "qcow2", "-c", `read -P ${pattern} 0 ${len}`, path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return out.success && !/Pattern verification failed/.test(new TextDecoder().decode(out.stdout));
}

testWithTimeout({
  name: "btrfs: a pool on a path that is not btrfs is refused, naming the filesystem",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const type = await fsType(dir);
    assert(type !== "btrfs");
    const err = await assertRejects(() => new BtrfsPool(dir).init(), ValidationError);
    assert(err.message.startsWith("source: "), err.message);
    assert(err.message.includes(`on a ${type} filesystem, not btrfs`), err.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "btrfs: volumes are subvolumes; clones and snapshots need no backing file",
  timeoutMs: 3 * MINUTE,
}, async () => {
  await withBtrfs(async (mnt) => {
    const pool = await new BtrfsPool(mnt).init();
    const v = await pool.create("data", 64 * MiB);
    assertEquals(v.virtualBytes, 64 * MiB);
    const subvols = await sh("btrfs", ["subvolume", "list", "-o", mnt]);
    assert(/ path data$/m.test(subvols), subvols);
    await writePattern(v.path, 0xab);

    // A linked clone is a snapshot: independent of its source, no backing chain.
    const clone = await pool.cloneLinked("data", "copy");
    assertEquals(clone.backing, null);
    assertEquals((await imageInfo(clone.path))["backing-filename"], undefined);
    await writePattern(v.path, 0x11);
    assert(await holds(clone.path, 0xab), "the clone keeps what the source had then");
    await pool.delete("data");
    assert(await holds(clone.path, 0xab), "and survives the source's deletion");

    // Disk snapshots: read-only subvolumes; apply brings the contents back.
    await pool.snapshot("create", "copy", "before");
    await writePattern(clone.path, 0xcd);
    await pool.snapshot("apply", "copy", "before");
    assert(await holds(pool.pathOf("copy"), 0xab), "restored to the snapshot");
    await pool.snapshot("delete", "copy", "before");
    assertEquals(await pool.snapshots("copy"), []);

    // From an image: a snapshot of one converted copy, grown to the size asked for.
    const img = join(mnt, "..", "img.qcow2");
    await sh("qemu-img", ["create", "-q", "-f", "qcow2", img, String(16 * MiB)]);
    await writePattern(img, 0x5a);
    const a = await pool.overlayOn(img, "qcow2", "from-img-a", 32 * MiB);
    const b = await pool.overlayOn(img, "qcow2", "from-img-b");
    assertEquals([a.virtualBytes, b.virtualBytes, a.backing], [32 * MiB, 16 * MiB, null]);
    assert(await holds(a.path, 0x5a) && await holds(b.path, 0x5a));
    await pool.resize("from-img-b", 48 * MiB);
    assertEquals((await pool.info("from-img-b")).virtualBytes, 48 * MiB);
    assertEquals((await pool.list()).map((x) => x.name), ["copy", "from-img-a", "from-img-b"]);
    const usage = await pool.usage();
    assertEquals(usage.volumes, 3);
    assert(usage.totalBytes! > 400 * MiB && usage.freeBytes > 0);
  });
});

testWithTimeout({
  name: "btrfs: send/receive moves a volume, then only what changed since the common snapshot",
  timeoutMs: 3 * MINUTE,
}, async () => {
  await withBtrfs((a) =>
    withBtrfs(async (b) => {
      const src = await new BtrfsPool(a).init();
      const dst = await new BtrfsPool(b).init();
      const v = await src.create("vol", 64 * MiB);
      await writePattern(v.path, 0x21, "8M");
      const size = async (s: { stream: ReadableStream<Uint8Array>; done: Promise<void> }) => {
        const chunks: Uint8Array[] = [];
        for await (const c of s.stream) chunks.push(c);
        await s.done;
        return chunks;
      };
      const full = await size(await src.send("vol", "m1", null));
      await dst.receive("vol", "m1", ReadableStream.from(full));
      assert(await holds(dst.pathOf("vol"), 0x21, "8M"), "the full stream carried the data");

      // One more MiB written; the incremental stream against m1 carries about that much.
      await writePattern(v.path, 0x42, "1M");
      const incr = await size(await src.send("vol", "m2", "m1"));
      const fullBytes = full.reduce((n, c) => n + c.length, 0);
      const incrBytes = incr.reduce((n, c) => n + c.length, 0);
      assert(incrBytes < fullBytes / 3, `incremental ${incrBytes} B vs full ${fullBytes} B`);
      await dst.receive("vol", "m2", ReadableStream.from(incr));
      assert(await holds(dst.pathOf("vol"), 0x42, "1M"), "the new write arrived");
      assertEquals(await dst.snapshots("vol"), ["m1", "m2"], "kept as bases for later sends");
      console.log(`send: full ${fullBytes} B, incremental ${incrBytes} B`);
    })
  );
});

testWithTimeout({
  name: "btrfs: a loop-backed pool is made and mounted by its host, and undone when refused",
  timeoutMs: 3 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "nv-btrfs-loop-" });
  try {
    const pools = new HostPools(new DirPool(join(dir, "pool")), {
      nodeName: "n1",
      pool: () => null,
      pools: () => [],
    });
    const spec = {
      name: "fast",
      driver: "btrfs" as const,
      source: join(dir, "{node}.mnt"),
      node: "n1",
      loop: { image: join(dir, "{node}.img"), sizeBytes: 256 * MiB },
    };
    const made = await pools.prepare(spec);
    assertEquals(await fsType(join(dir, "n1.mnt")), "btrfs", "{node} is the host's name");
    await made.undo();
    assertEquals(await Deno.stat(join(dir, "n1.img")).catch(() => null), null, "image removed");
    const mounts = await Deno.readTextFile("/proc/self/mounts");
    assert(!mounts.includes(join(dir, "n1.mnt")), "unmounted");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
