/**
 * Backup benchmark (issue 12): a 2 GiB disk holding 1 GiB of data, on a one-node cluster (TCG
 * guest), side by side with its anchor, `qemu-img convert` of the same disk to the same target
 * directory, in the same run. Per run, interleaved (anchor first in even runs, after in odd ones):
 *
 * - `anchorMs`: `qemu-img convert -U -O qcow2 DISK TARGET/anchor.qcow2` of the running VM's disk;
 * - `fullMs`: a full backup of the running VM, `POST /api/v1/backups` → operation `succeeded`
 *   as the client sees it (freeze, copy job, read-back checksums of every 64 KiB block, manifest,
 *   Raft record); `fullCopyMs` and `fullChecksumMs` split it;
 * - `incrementalMs`: after the guest wrote 32 MiB at random 64 KiB-aligned offsets (512 writes,
 *   at its next boot), an incremental backup, the same way; `incrementalCopiedMiB` what it copied;
 * - `restoreMs`: `POST /api/v1/backups/INCR/restore {as}` → `succeeded` (the chain converted into
 *   a new VM's volume); `restoreAnchorMs`: `qemu-img convert` of the anchor's file back into the
 *   pool directory;
 * - `freezeMs`: how long the guest's filesystems stayed frozen around the backup's point in
 *   time (fs-freeze → fs-thaw, the agent's answers included). QEMU never stops the vCPUs for a
 *   backup (`blockdev-backup` is copy-before-write), so this window is the guest's only pause.
 *   `freezeTransactionMs` is the QMP transaction's part of it (the rest: the agent's freeze,
 *   in which the guest syncs, and thaw).
 *
 * Ratios per run: `fullVsAnchor` = anchorMs / fullMs (throughput relative to the anchor, goal ≥
 * 0.8), `incrementalVsFull` = incrementalMs / fullMs (goal ≤ 0.1), `restoreVsAnchor` =
 * restoreAnchorMs / restoreMs (goal ≥ 0.8: the restore against the same conversion back into
 * the pool).
 *
 * **Durable anchors.** `qemu-img convert`'s default cache mode for its target is `unsafe`: it
 * never flushes, so it is timed while its 1 GiB is still in the page cache (a `sync` after it
 * took 0.42–0.46 s more here), and how long it takes depends on whether the kernel's dirty-page
 * limit throttles it (0.3 s, or 2 s). A backup and a restore by novactl are on disk when they
 * succeed (their files fsynced). So each run also times the same conversions made durable the
 * fastest way qemu-img offers, `-t none` (O_DIRECT, flushed at the end; `-t writeback` took
 * 0.74 s against 0.55 s by hand): `durableAnchorMs`, `durableRestoreAnchorMs`, and the ratios
 * `fullVsDurableAnchor`, `restoreVsDurableAnchor`. Every timed step starts after a `sync`
 * (untimed), so none pays for the dirty pages of the one before it, and with the files in the
 * target directory out of the page cache (`settle`): restores and their anchors read them cold,
 * as from a backup target, and no step writes into memory made cold by the step before.
 *
 * **The chain's own anchor.** The restore converts a chain (the full backup and the
 * incremental overlay on it), which `qemu-img convert` reads more slowly than one file (by ~0.1
 * s here: 0.63–0.70 s against 0.55–0.58 s by hand, both `-t none`). `chainRestoreAnchorMs` is
 * that conversion, `qemu-img convert -t none` of the restored backup's own file (its backing
 * chain followed) into the pool, the restore's work without novactl around it; ratio
 * `restoreVsChainAnchor`.
 *
 *   deno task bench:backup [--runs 3]
 *
 * Writes bench/results/backup.json (`BackupBenchResult`).
 */
import { NovactlCluster } from "./lib/novactl_cluster.ts";
import { type Figure, figure } from "./lib/figures.ts";
import { fetchConsole, guestImportArgs, scriptUserData, testGuest } from "./lib/guest.ts";
import { clusterFetch } from "./lib/tls.ts";
import { type RunMeta, runMeta } from "./lib/run_meta.ts";
import { sleep } from "./lib/util.ts";
import { runToCompletion } from "./lib/process.ts";

/** Every file under `dir`, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await filesUnder(p));
    else if (e.isFile) out.push(p);
  }
  return out;
}

/** What bench/results/backup.json holds. */
export interface BackupBenchResult {
  meta: RunMeta;
  setup: { diskGiB: number; dataGiB: number; randomWriteMiB: number; runs: number };
  novactl: {
    label: string;
    fullMs: Figure;
    fullCopyMs: Figure;
    fullChecksumMs: Figure;
    incrementalMs: Figure;
    incrementalCopiedMiB: Figure;
    restoreMs: Figure;
    freezeMs: Figure;
    freezeTransactionMs: Figure;
  };
  anchor: {
    label: string;
    anchorMs: Figure;
    restoreAnchorMs: Figure;
    durableAnchorMs: Figure;
    durableRestoreAnchorMs: Figure;
    chainRestoreAnchorMs: Figure;
  };
  ratios: {
    label: string;
    fullVsAnchor: Figure;
    incrementalVsFull: Figure;
    restoreVsAnchor: Figure;
    fullVsDurableAnchor: Figure;
    restoreVsDurableAnchor: Figure;
    restoreVsChainAnchor: Figure;
  };
}

const runsArg = Deno.args.indexOf("--runs");
const RUNS = runsArg >= 0 ? Math.max(1, Number(Deno.args[runsArg + 1])) : 3;
const OUT = new URL("./results/backup.json", import.meta.url).pathname;
const GiB = 2 ** 30;
const MiB = 2 ** 20;

/** Boot 1 and 2 write nothing; every later boot writes 512 random 64 KiB blocks (32 MiB). */
const GUEST_SCRIPT = `
D=/dev/vda
n=$(dd if=$D bs=16 count=1 2>/dev/null | tr -dc 0-9 | sed 's/^0*//')
n=$(( \${n:-0} + 1 ))
printf 'NVBOOT %08d\\n' $n | dd of=$D bs=16 count=1 conv=notrunc,fsync 2>/dev/null
if [ $n -ge 3 ]; then
  dd if=/dev/urandom of=/run/rnd bs=65536 count=512 2>/dev/null
  i=0
  while [ $i -lt 512 ]; do
    off=$(( $(od -An -N4 -tu4 /dev/urandom) % 32767 + 1 ))
    dd if=/run/rnd of=$D bs=65536 skip=$i seek=$off count=1 conv=notrunc 2>/dev/null
    i=$((i + 1))
  done
  sync
fi
echo "NVBENCH boot=$n done"
`;

const cluster = new NovactlCluster({ env: { NOVACTL_ACCEL: "tcg" } });
try {
  const guest = await testGuest();
  await cluster.start(1);
  const [n1] = cluster.nodes;
  const token = cluster.adminToken;
  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await clusterFetch(`${n1.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json as T;
  };
  const cli = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../main.ts", import.meta.url).pathname,
        ...args,
        "--server",
        n1.url,
        "--token",
        token,
        "--ca",
        cluster.caFile,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    return new TextDecoder().decode(out.stdout);
  };
  type Op = {
    id: string;
    state: string;
    error: string | null;
    result: Record<string, number> & { freezePhasesMs?: { transaction: number } | null };
  };
  const freezeOf = (op: Op) => {
    if (typeof op.result.freezeMs === "number") s.freeze.push(op.result.freezeMs);
    if (op.result.freezePhasesMs) s.freezeTx.push(op.result.freezePhasesMs.transaction);
  };
  const untilDone = async (op: Op): Promise<Op> => {
    for (;;) {
      const o = await api<Op>("GET", `/api/v1/operations/${op.id}/wait?timeoutMs=60000`);
      if (o.state === "succeeded") return o;
      if (o.state !== "running") throw new Error(`operation ${o.id} ${o.state}: ${o.error}`);
    }
  };
  const timed = async (start: () => Promise<Op>): Promise<{ ms: number; op: Op }> => {
    const t0 = performance.now();
    const op = await untilDone(await start());
    return { ms: performance.now() - t0, op };
  };
  const untilBoot = async (n: number) => {
    const deadline = Date.now() + 300_000;
    while (!(await fetchConsole(n1.url, token, "b1")).includes(`NVBENCH boot=${n} done`)) {
      if (Date.now() > deadline) throw new Error(`boot ${n} of b1 never finished its writes`);
      await sleep(500);
    }
  };
  /**
   * Before every timed step (untimed): dirty pages of earlier steps written out, so the step
   * does not pay for them, and what earlier steps wrote into the target directory (backups,
   * the anchor's copies) dropped from the page cache, so that a step reads them as it would
   * from a backup target, cold, and writes into memory as hot as every other step's. A 1 GiB
   * copy into the page cache right after another step left 1 GiB there took 1.9–2.6 s here
   * instead of 0.3 s (all of it the kernel's copy into fresh pages: this VM's host gives its
   * freed memory back), which made the full backup 2–8× slower whenever the anchor ran first.
   */
  const settle = async () => {
    await runToCompletion("sync", []);
    for (const f of await filesUnder(target)) {
      await runToCompletion("dd", [`if=${f}`, "iflag=nocache", "count=0", "status=none"]);
    }
  };
  /** `qemu-img convert` as the issue names it; `durable`: `-t none`, on disk when it returns. */
  const convert = async (src: string, dst: string, durable = false): Promise<number> => {
    await settle();
    const t0 = performance.now();
    const out = await new Deno.Command("qemu-img", {
      args: ["convert", "-U", ...(durable ? ["-t", "none"] : []), "-O", "qcow2", src, dst],
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return performance.now() - t0;
  };

  const base = await Deno.makeTempDir({ prefix: "novactl-backup-bench-" });
  const target = `${base}/target`;
  await Deno.mkdir(target, { mode: 0o711 });
  await Deno.chmod(base, 0o711);
  const meta0 = await runMeta("backup", { dataDir: target, runs: RUNS });
  await cli(...guestImportArgs(guest, "guest"));
  await cli("backup", "target", "create", "bench", "--path", target);
  await Deno.writeTextFile(`${base}/ud.yaml`, scriptUserData(GUEST_SCRIPT));
  await cli(
    "vm",
    "create",
    "b1",
    "--image",
    "guest",
    "--disk-size",
    "2",
    "--user-data",
    `${base}/ud.yaml`,
    "--wait",
  );
  await untilBoot(1);
  await cli("vm", "stop", "b1", "--wait");
  const vm = await api<{ disks: { volume: string }[] }>("GET", "/api/v1/vms/b1");
  const disk = `${n1.dataDir}/pool/${vm.disks[0].volume}.qcow2`;
  // 1 GiB of data in the second half of the disk (the guest's counter lives in the first block).
  const fill = await new Deno.Command("qemu-io", {
    args: ["-f", "qcow2", "-c", `write -P 0x5a ${GiB} ${GiB}`, disk],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!fill.success) throw new Error(new TextDecoder().decode(fill.stderr));
  await cli("vm", "start", "b1", "--wait");
  await untilBoot(2);
  const s = {
    anchor: [] as number[],
    restoreAnchor: [] as number[],
    durableAnchor: [] as number[],
    durableRestoreAnchor: [] as number[],
    chainRestoreAnchor: [] as number[],
    full: [] as number[],
    fullCopy: [] as number[],
    fullChecksum: [] as number[],
    incr: [] as number[],
    incrCopied: [] as number[],
    restore: [] as number[],
    freeze: [] as number[],
    freezeTx: [] as number[],
  };
  for (let r = 0; r < RUNS; r++) {
    const anchorFile = `${target}/anchor-${r}.qcow2`;
    const durableFile = `${target}/anchor-durable-${r}.qcow2`;
    const anchor = async () => {
      s.anchor.push(await convert(disk, anchorFile));
      s.durableAnchor.push(await convert(disk, durableFile, true));
      await Deno.remove(durableFile);
    };
    if (r % 2 === 0) await anchor();
    await settle();
    const full = await timed(() =>
      api<Op>("POST", "/api/v1/backups", { vm: "b1", target: "bench" })
    );
    if (r % 2 === 1) await anchor();
    s.full.push(full.ms);
    s.fullCopy.push(full.op.result.copyMs);
    s.fullChecksum.push(full.op.result.checksumMs);
    freezeOf(full.op);
    await cli("vm", "restart", "b1", "--wait");
    await untilBoot(3 + r);
    await settle();
    const incr = await timed(() =>
      api<Op>("POST", "/api/v1/backups", { vm: "b1", target: "bench", incremental: true })
    );
    if (incr.op.result.kind as unknown !== "incremental") {
      throw new Error(`expected an incremental backup: ${JSON.stringify(incr.op.result)}`);
    }
    s.incr.push(incr.ms);
    s.incrCopied.push(incr.op.result.copiedBytes / MiB);
    freezeOf(incr.op);
    const incrId = String(incr.op.result.backup);
    await settle();
    const restore = await timed(() =>
      api<Op>("POST", `/api/v1/backups/${incrId}/restore`, { as: `rs${r}` })
    );
    s.restore.push(restore.ms);
    const back = `${n1.dataDir}/pool/.tmp-anchor-${r}.qcow2`;
    s.restoreAnchor.push(await convert(anchorFile, back));
    await Deno.remove(back);
    s.durableRestoreAnchor.push(await convert(anchorFile, back, true));
    await Deno.remove(back);
    s.chainRestoreAnchor.push(await convert(`${target}/b1/${incrId}.root.qcow2`, back, true));
    await Deno.remove(back);
    await Deno.remove(anchorFile);
    await api("DELETE", `/api/v1/vms/rs${r}?force=true`);
    await api("DELETE", `/api/v1/backups/${incrId}`);
    await api("DELETE", `/api/v1/backups/${full.op.result.backup}`);
    console.log(
      `run ${r + 1}: anchor ${s.anchor[r].toFixed(0)} ms, full ${s.full[r].toFixed(0)} ms ` +
        `(copy ${s.fullCopy[r]}, checksums ${s.fullChecksum[r]}), incremental ${
          s.incr[r].toFixed(0)
        } ms (${s.incrCopied[r].toFixed(1)} MiB), restore ${s.restore[r].toFixed(0)} ms ` +
        `(anchor ${s.restoreAnchor[r].toFixed(0)} ms), freeze ${
          s.freeze.slice(-2).join("/")
        } ms; ` +
        `durable anchors: copy ${s.durableAnchor[r].toFixed(0)} ms, restore ${
          s.durableRestoreAnchor[r].toFixed(0)
        } ms, restore of the chain ${s.chainRestoreAnchor[r].toFixed(0)} ms`,
    );
    const split = (o: Op) => JSON.stringify({ ...o.result, kind: undefined, backup: undefined });
    console.log(`  full: ${split(full.op)}\n  incremental: ${split(incr.op)}`);
    console.log(`  restore: ${split(restore.op)}`);
  }
  const ratio = (a: number[], b: number[]) => a.map((x, i) => x / b[i]);
  const result: BackupBenchResult = {
    meta: { ...meta0, date: new Date().toISOString() },
    setup: { diskGiB: 2, dataGiB: 1, randomWriteMiB: 32, runs: RUNS },
    novactl: {
      label: "novactl",
      fullMs: figure(s.full),
      fullCopyMs: figure(s.fullCopy),
      fullChecksumMs: figure(s.fullChecksum),
      incrementalMs: figure(s.incr),
      incrementalCopiedMiB: figure(s.incrCopied),
      restoreMs: figure(s.restore),
      freezeMs: figure(s.freeze),
      freezeTransactionMs: figure(s.freezeTx),
    },
    anchor: {
      label: "qemu-img convert (anchor)",
      anchorMs: figure(s.anchor),
      restoreAnchorMs: figure(s.restoreAnchor),
      durableAnchorMs: figure(s.durableAnchor),
      durableRestoreAnchorMs: figure(s.durableRestoreAnchor),
      chainRestoreAnchorMs: figure(s.chainRestoreAnchor),
    },
    ratios: {
      label: "ratios",
      fullVsAnchor: figure(ratio(s.anchor, s.full)),
      incrementalVsFull: figure(ratio(s.incr, s.full)),
      restoreVsAnchor: figure(ratio(s.restoreAnchor, s.restore)),
      fullVsDurableAnchor: figure(ratio(s.durableAnchor, s.full)),
      restoreVsDurableAnchor: figure(ratio(s.durableRestoreAnchor, s.restore)),
      restoreVsChainAnchor: figure(ratio(s.chainRestoreAnchor, s.restore)),
    },
  };
  console.log(JSON.stringify(result, null, 2));
  await Deno.writeTextFile(OUT, JSON.stringify(result, null, 2) + "\n");
  console.log(`wrote ${OUT}`);
  await Deno.remove(base, { recursive: true }).catch(() => {});
} finally {
  await cluster.stop();
}
