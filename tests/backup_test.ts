/**
 * Backups end to end with real QEMU (TCG) on a two-node cluster (data dirs on
 * tmpfs: live migration from the ext4 root fails here, SPEC.md): the test
 * guest writes a known pattern into its disk at each boot (a user-data script
 * that counts its boots in the disk's first 16 bytes: boot 1 writes 4 MiB of
 * random data at 8 MiB, boot 2 writes 1 MiB at 64 MiB, and each boot prints the
 * sha256 of both regions as it reads them from the disk).
 *
 * - a full backup of the running VM (fs-frozen by the agent), then a VM restart
 *   (bitmaps stored in the qcow2 and loaded again), then an incremental backup
 *   that carries only the changed blocks (size checked);
 * - a live migration to the other host (local disk, NBD mirror) keeps the
 *   bitmap: the next backup there is incremental again;
 * - an incremental backup of the stopped VM (offline, through
 *   qemu-storage-daemon) with nothing changed copies nothing;
 * - restoring the incremental (full + incremental) as a new VM reproduces
 *   both regions (sha256 of the restored disk's regions equals the guest's),
 *   and the new VM boots; restoring the full one in place onto the stopped VM
 *   brings its disk back to that point (and the next backup is full, saying why);
 * - `backup verify` passes, then detects one flipped byte in the target;
 * - restoring in place onto a running VM is refused, and a corrupt manifest is
 *   refused with a clear error and nothing created;
 * - deleting a backup another builds on is refused.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, step } from "./support/api.ts";
import { fetchConsole, guestImportArgs, scriptUserData, testGuest } from "../bench/lib/guest.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

const MiB = 2 ** 20;
const REGION_A = { offset: 8 * MiB, bytes: 4 * MiB };
const REGION_B = { offset: 64 * MiB, bytes: 1 * MiB };

/** The guest's part: count boots in the disk's first 16 bytes, write a region per boot, print. */
const PATTERN_SCRIPT = `
D=/dev/vda
n=$(dd if=$D bs=16 count=1 2>/dev/null | tr -dc 0-9 | sed 's/^0*//')
n=$(( \${n:-0} + 1 ))
printf 'NVBOOT %08d\\n' $n | dd of=$D bs=16 count=1 conv=notrunc,fsync 2>/dev/null
case $n in
1) dd if=/dev/urandom of=$D bs=65536 seek=128 count=64 conv=notrunc,fsync 2>/dev/null ;;
2) dd if=/dev/urandom of=$D bs=65536 seek=1024 count=16 conv=notrunc,fsync 2>/dev/null ;;
esac
sync
a=$(dd if=$D bs=65536 skip=128 count=64 2>/dev/null | sha256sum | cut -d' ' -f1)
b=$(dd if=$D bs=65536 skip=1024 count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
echo "NVPATTERN boot=$n a=$a b=$b"
`;

/** `NVPATTERN` lines the guest printed: per boot, the sha256 of both regions. */
function patterns(text: string): { boot: number; a: string; b: string }[] {
  return [...text.matchAll(/NVPATTERN boot=(\d+) a=([0-9a-f]{64}) b=([0-9a-f]{64})/g)].map((m) => ({
    boot: Number(m[1]),
    a: m[2],
    b: m[3],
  }));
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(d)].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** sha256 of regions of a qcow2 volume, read through qemu-img (a sparse raw copy). */
async function regionShas(
  qcow2: string,
  regions: { offset: number; bytes: number }[],
): Promise<string[]> {
  const raw = await Deno.makeTempFile({ suffix: ".raw" });
  try {
    const out = await new Deno.Command("qemu-img", {
      args: ["convert", "-U", "-O", "raw", qcow2, raw],
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const f = await Deno.open(raw);
    try {
      const shas = [];
      for (const r of regions) {
        const buf = new Uint8Array(r.bytes);
        await f.seek(r.offset, Deno.SeekMode.Start);
        let got = 0;
        while (got < buf.length) {
          const n = await f.read(buf.subarray(got));
          if (n === null) break;
          got += n;
        }
        shas.push(await sha256Hex(buf));
      }
      return shas;
    } finally {
      f.close();
    }
  } finally {
    await Deno.remove(raw).catch(() => {});
  }
}

interface OpView {
  id: string;
  state: string;
  error: string | null;
  result: Record<string, unknown> | null;
}

interface BackupView {
  id: string;
  kind: string;
  parent: string | null;
  dir: string;
  manifest: string;
  fullReason: string | null;
  disks: { id: string; file: string; fileBytes: number; copiedBytes: number }[];
}

testWithTimeout({
  name: "backups: full, incremental across a restart, offline, restore, verify, refusals",
  timeoutMs: 15 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const base = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-backup-test-" });
  const cluster = new NovactlCluster({
    baseDir: base,
    env: { NOVACTL_ACCEL: "tcg" },
    keepBaseDir: Deno.env.get("NOVACTL_KEEP_TEST_DIRS") === "1",
  });
  const targetDir = await Deno.makeTempDir({ prefix: "novactl-backups-" });
  // QEMU runs as novactl-qemu and opens its target files by path.
  await Deno.chmod(targetDir, 0o711);
  const userData = await Deno.makeTempFile({ suffix: ".yaml" });
  await cluster.start(2, { voters: 1 });
  const [n1, n2] = cluster.nodes;
  const token = cluster.adminToken;
  const run = (...args: string[]) => cli([...args, "--server", n1.url, "--token", token]);
  const ok = async (...args: string[]) => {
    const r = await run(...args);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const lastLine = (s: string) => s.trim().split("\n").pop()!;
  const backupOf = async (id: string) =>
    (await api<BackupView>(`${n1.url}/api/v1/backups/${id}`, { token })).body;
  /** The operation that made backup `id` (its result has the copied bytes and freeze time). */
  const opMaking = async (id: string) => {
    const ops =
      (await api<{ operations: (OpView & { params: { backup: string }; kind: string })[] }>(
        `${n1.url}/api/v1/operations`,
        { token },
      )).body.operations;
    return ops.find((o) => o.kind === "backup" && o.params.backup === id)!;
  };
  const consoleOf = (name: string) => fetchConsole(n1.url, token, name);
  const untilPattern = (boot: number) =>
    eventually(`g1 boot ${boot} pattern`, async () => {
      return patterns(await consoleOf("g1")).find((p) => p.boot === boot);
    }, 120_000);

  let full = "";
  let incr = "";
  let pattern2 = { a: "", b: "" };
  try {
    await step(t, "a target, and a guest that writes a known pattern", async () => {
      await ok(...guestImportArgs(guest, "guest"));
      await ok("backup", "target", "create", "t1", "--path", targetDir);
      const list = JSON.parse(await ok("backup", "target", "list", "-o", "json"));
      assertEquals(list.targets.map((x: { name: string }) => x.name), ["t1"]);
      await Deno.writeTextFile(userData, scriptUserData(PATTERN_SCRIPT));
      await ok(
        "vm",
        "create",
        "g1",
        "--image",
        "guest",
        "--user-data",
        userData,
        "--node",
        "n1",
        "--wait",
      );
      await untilPattern(1);
    });

    await step(t, "full backup of the running VM, frozen by its agent", async () => {
      await eventually("agent up", async () => {
        const vm = (await api<{ guest: { agent: string } | null }>(
          `${n1.url}/api/v1/vms/g1`,
          { token },
        )).body;
        return vm.guest?.agent === "ok" || undefined;
      }, 60_000);
      full = lastLine(await ok("vm", "backup", "create", "g1", "--target", "t1"));
      const b = await backupOf(full);
      assertEquals(b.kind, "full");
      assertEquals(b.parent, null);
      const op = await opMaking(full);
      assertEquals(op.result?.fsFrozen, true, JSON.stringify(op.result));
      // The manifest is in the target beside the qcow2: a sha256 per 64 KiB block of it, and
      // their list's digest.
      const files = [...Deno.readDirSync(`${targetDir}/g1`)].map((e) => e.name).sort();
      assert(files.includes(`${full}.manifest.json`), files.join(","));
      assert(files.includes(`${full}.root.qcow2`), files.join(","));
      const m = JSON.parse(await Deno.readTextFile(`${targetDir}/g1/${full}.manifest.json`));
      assertEquals(m.format, "novactl-backup/2");
      const [disk] = m.disks;
      assertEquals(disk.blocks.length, Math.ceil(disk.fileBytes / 65536));
      const list = new TextEncoder().encode(disk.blocks.map((h: string) => h + "\n").join(""));
      assertEquals(disk.blocksSha256, await sha256Hex(list));
    });

    await step(
      t,
      "a VM restart keeps the bitmap: the next backup is incremental and small",
      async () => {
        await ok("vm", "restart", "g1", "--wait");
        const p2 = await untilPattern(2);
        pattern2 = { a: p2.a, b: p2.b };
        incr = lastLine(await ok("vm", "backup", "create", "g1", "--incremental"));
        const b = await backupOf(incr);
        assertEquals(b.kind, "incremental", `fullReason: ${b.fullReason}`);
        assertEquals(b.parent, full);
        const fullBytes = (await backupOf(full)).disks[0].copiedBytes;
        const copied = b.disks[0].copiedBytes;
        // 1 MiB of pattern and the boot counter's block; the full one copied the whole disk.
        assert(
          copied >= REGION_B.bytes && copied <= REGION_B.bytes + 256 * 1024,
          `copied ${copied}`,
        );
        assert(b.disks[0].fileBytes < 3 * MiB, `file ${b.disks[0].fileBytes}`);
        assert(fullBytes >= 1024 * MiB, `full copied ${fullBytes}`);
      },
    );

    await step(
      t,
      "restoring in place onto the running VM is refused before anything runs",
      async () => {
        const r = await api(`${n1.url}/api/v1/backups/${incr}/restore`, {
          token,
          method: "POST",
          body: { inPlace: true },
        });
        assertEquals(r.status, 409, JSON.stringify(r.body));
        assert(/stop it before restoring in place/.test(JSON.stringify(r.body)));
      },
    );

    let moved = "";
    await step(
      t,
      "a live migration keeps the bitmap: incremental again on the new host",
      async () => {
        await ok("vm", "migrate", "g1", "--to", "n2");
        moved = lastLine(await ok("vm", "backup", "create", "g1", "--incremental"));
        const b = await backupOf(moved);
        assertEquals(b.kind, "incremental", `fullReason: ${b.fullReason}`);
        assertEquals(b.parent, incr);
        assertEquals(b.disks[0].copiedBytes, 0);
        assertEquals((await opMaking(moved)).result?.live, true);
      },
    );

    await step(
      t,
      "a stopped VM is backed up offline; nothing changed, nothing copied",
      async () => {
        await ok("vm", "stop", "g1", "--wait");
        const id = lastLine(await ok("vm", "backup", "create", "g1", "--incremental"));
        const b = await backupOf(id);
        assertEquals(b.kind, "incremental", `fullReason: ${b.fullReason}`);
        assertEquals(b.parent, moved);
        assertEquals(b.disks[0].copiedBytes, 0);
        assertEquals((await opMaking(id)).result?.live, false);
        // The newest backups go, newest first; the chain stays restorable.
        await ok("backup", "delete", id);
        await ok("backup", "delete", moved);
      },
    );

    await step(t, "deleting a backup another builds on is refused", async () => {
      const r = await run("backup", "delete", full);
      assertEquals(r.code, 1);
      assert(/is the parent of/.test(r.stderr), r.stderr);
    });

    await step(t, "full + incremental restored as a new VM reproduce the pattern", async () => {
      const out = await ok("backup", "restore", incr, "--as", "r1", "-o", "json");
      assertEquals(JSON.parse(out).state, "succeeded");
      const vm = (await api<{ disks: { volume: string }[]; node: string }>(
        `${n1.url}/api/v1/vms/r1`,
        { token },
      )).body;
      const host = vm.node === "n2" ? n2 : n1;
      const shas = await regionShas(`${host.dataDir}/pool/${vm.disks[0].volume}.qcow2`, [
        REGION_A,
        REGION_B,
      ]);
      assertEquals(shas, [pattern2.a, pattern2.b]);
      await ok("vm", "start", "r1", "--wait");
    });

    await step(t, "in place onto the stopped VM: its disk is the full backup's again", async () => {
      const out = await ok("backup", "restore", full, "--in-place", "-o", "json");
      assertEquals(JSON.parse(out).state, "succeeded");
      const vm = (await api<{ disks: { volume: string }[]; node: string }>(
        `${n1.url}/api/v1/vms/g1`,
        { token },
      )).body;
      const host = vm.node === "n2" ? n2 : n1;
      const shas = await regionShas(`${host.dataDir}/pool/${vm.disks[0].volume}.qcow2`, [
        REGION_A,
        REGION_B,
      ]);
      // Region B was written after the full backup: zeros again.
      assertEquals(shas, [pattern2.a, await sha256Hex(new Uint8Array(REGION_B.bytes))]);
      // The bitmap went with the replaced disk: the next backup is full, and says why.
      const id = lastLine(await ok("vm", "backup", "create", "g1", "--incremental"));
      const b = await backupOf(id);
      assertEquals(b.kind, "full");
      assert(/no dirty bitmap/.test(b.fullReason ?? ""), String(b.fullReason));
    });

    await step(t, "verify passes, then detects one flipped byte", async () => {
      const good = JSON.parse(await ok("backup", "verify", full, "-o", "json"));
      assertEquals(good.state, "succeeded");
      const b = await backupOf(full);
      const path = `${targetDir}/${b.dir}/${b.disks[0].file}`;
      const f = await Deno.open(path, { read: true, write: true });
      const at = Math.floor(b.disks[0].fileBytes / 2);
      const one = new Uint8Array(1);
      await f.seek(at, Deno.SeekMode.Start);
      await f.read(one);
      one[0] ^= 0x01;
      await f.seek(at, Deno.SeekMode.Start);
      await f.write(one);
      f.close();
      const bad = await run("backup", "verify", full);
      assertEquals(bad.code, 1, bad.stdout);
      assert(/do not match their checksum/.test(bad.stderr), bad.stderr);
      assert(new RegExp(`block ${Math.floor(at / 65536)} `).test(bad.stderr), bad.stderr);
    });

    await step(
      t,
      "a corrupt manifest is refused with a clear error; nothing is created",
      async () => {
        const b = await backupOf(incr);
        const path = `${targetDir}/${b.dir}/${b.manifest}`;
        const text = await Deno.readTextFile(path);
        await Deno.writeTextFile(path, text.replace(`"kind":"incremental"`, `"kind":"full"`));
        const r = await run("backup", "restore", incr, "--as", "r2");
        assertEquals(r.code, 1);
        assert(/manifest .* is corrupt or was changed/.test(r.stderr), r.stderr);
        const vm = await api(`${n1.url}/api/v1/vms/r2`, { token });
        assertEquals(vm.status, 404);
        const ops = (await api<{ operations: { kind: string; target: string }[] }>(
          `${n1.url}/api/v1/operations`,
          { token },
        )).body.operations;
        assert(!ops.some((o) => o.kind === "restore" && o.target === "r2"));
      },
    );
  } finally {
    await cluster.stop();
    await Deno.remove(base, { recursive: true }).catch(() => {});
    await Deno.remove(targetDir, { recursive: true }).catch(() => {});
    await Deno.remove(userData).catch(() => {});
  }
});
