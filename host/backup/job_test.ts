/**
 * The QMP side of a backup against a scripted QEMU: what the transaction
 * holds, which bitmaps go on success, and that an abort cancels the jobs and
 * leaves neither the new bitmap nor a file behind. (Real QEMU:
 * tests/backup_test.ts.)
 */
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import type { BackupRecord } from "../../core/fsm/mod.ts";
import type { DirtyBitmap, QmpExecutor } from "../kvm/commands.ts";
import {
  bitmapName,
  finishBackupJobs,
  incrementalBlocker,
  JobChanges,
  runBackupJobs,
  startBackupJobs,
} from "./job.ts";
import type { GuestAgent } from "../kvm/qga.ts";
import { qemuImg } from "../storage/qemu_img.ts";
import { testWithTimeout } from "../../tests/support/timeout.ts";

/** A QEMU whose jobs advance one step per `query-jobs`, `steps` times, unless cancelled. */
class FakeQemu implements QmpExecutor {
  calls: { command: string; args?: Record<string, unknown> }[] = [];
  bitmaps: string[];
  jobs = new Map<string, { done: number; total: number; cancelled: boolean; held: boolean }>();
  /** When set, every command's name is appended (shared with a fake agent, for the order). */
  log?: string[];

  constructor(bitmaps: string[], readonly steps = 3, readonly total = 1 << 20) {
    this.bitmaps = [...bitmaps];
  }

  execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
    this.calls.push({ command, args });
    this.log?.push(command);
    const ok = (v: unknown = {}) => Promise.resolve(v as T);
    switch (command) {
      case "blockdev-add":
      case "blockdev-del":
        return ok();
      case "blockdev-create": // formats at once: the job concluded at the first look
        this.jobs.set(String(args!["job-id"]), {
          done: this.steps,
          total: 0,
          cancelled: false,
          held: false,
        });
        return ok();
      case "block-job-set-speed": {
        const job = this.jobs.get(String(args!.device));
        if (!job) return Promise.reject(new Error(`no job ${args!.device}`));
        if (job.done >= this.steps) {
          return Promise.reject(new Error(`Job in state 'concluded' cannot accept 'set-speed'`));
        }
        job.held = args!.speed !== 0;
        return ok();
      }
      case "job-dismiss":
        this.jobs.delete(String(args!.id));
        return ok();
      case "transaction": {
        for (const a of args!.actions as { type: string; data: Record<string, unknown> }[]) {
          if (a.type === "block-dirty-bitmap-add") this.bitmaps.push(String(a.data.name));
          else {this.jobs.set(String(a.data["job-id"]), {
              done: 0,
              total: this.total,
              cancelled: false,
              held: a.data.speed !== undefined && a.data.speed !== 0,
            });}
        }
        return ok();
      }
      case "query-jobs":
        return ok([...this.jobs].map(([id, j]) => {
          if (!j.cancelled && !j.held && j.done < this.steps) j.done++;
          const concluded = j.cancelled || j.done >= this.steps;
          return {
            id,
            status: concluded ? "concluded" : "running",
            "current-progress": Math.round((j.done / this.steps) * j.total),
            "total-progress": j.total,
            ...(j.cancelled ? { error: "cancelled" } : {}),
          };
        }));
      case "job-cancel": {
        const job = this.jobs.get(String(args!.id));
        if (!job) return Promise.reject(new Error(`no job ${args!.id}`));
        job.cancelled = true;
        return ok();
      }
      case "query-named-block-nodes":
        return ok([{
          "node-name": "root",
          "dirty-bitmaps": this.bitmaps.map((name) => ({ name, count: 0 })),
        }]);
      case "block-dirty-bitmap-remove":
        this.bitmaps = this.bitmaps.filter((b) => b !== args!.name);
        return ok();
    }
    return Promise.reject(new Error(`unexpected ${command}`));
  }
}

function request(dir: string, signal: AbortSignal, parent: BackupRecord | null = null) {
  return {
    id: "bk-00000000000b",
    dir,
    disks: [{ id: "root", node: "root", virtualBytes: 1 << 20 }],
    parent,
    agent: null,
    qemuUser: null,
    signal,
    onProgress: () => {},
  };
}

Deno.test("backup jobs: one transaction, the new bitmap kept, the old ones dropped", async () => {
  const dir = join(await Deno.makeTempDir(), "web1");
  const qemu = new FakeQemu([bitmapName("bk-00000000000a"), "someone-elses"]);
  const r = await runBackupJobs(qemu, request(dir, new AbortController().signal));
  const tx = qemu.calls.find((c) => c.command === "transaction")!;
  assertEquals(tx.args!.actions, [
    {
      type: "block-dirty-bitmap-add",
      data: { node: "root", name: bitmapName("bk-00000000000b"), persistent: true },
    },
    {
      type: "blockdev-backup",
      data: {
        "job-id": "nvbkj-root",
        device: "root",
        target: "nvbkt-root",
        sync: "full",
        // Kernel copies in large requests (the default copies 64 KiB clusters).
        "x-perf": { "use-copy-range": true, "max-workers": 8, "max-chunk": 64 * 2 ** 20 },
        "auto-dismiss": false,
      },
    },
  ]);
  assertEquals(qemu.bitmaps, ["someone-elses", bitmapName("bk-00000000000b")]);
  assertEquals(r.disks, [{
    id: "root",
    file: "bk-00000000000b.root.qcow2",
    copiedBytes: 1 << 20,
    virtualBytes: 1 << 20,
  }]);
  // The target closed (QEMU writes its last metadata then) before the old bitmap goes, which
  // overlaps the caller's checksums.
  const del = qemu.calls.findIndex((c) =>
    c.command === "blockdev-del" && c.args!["node-name"] === "nvbkt-root"
  );
  const removed = qemu.calls.findIndex((c) => c.command === "block-dirty-bitmap-remove");
  assert(del >= 0 && removed > del, `blockdev-del at ${del}, bitmap removed at ${removed}`);
  assert((await Deno.stat(join(dir, "bk-00000000000b.root.qcow2"))).isFile);
  // The target: a file node on the file the node made, formatted by QEMU (no backing file:
  // a full backup), the qcow2 node over it; removed in the opposite order.
  const adds = qemu.calls.filter((c) => c.command === "blockdev-add").map((c) => c.args!);
  assertEquals(adds.map((a) => [a.driver, a["node-name"], a.file ?? a.filename]), [
    ["file", "nvbkf-root", join(dir, "bk-00000000000b.root.qcow2")],
    ["qcow2", "nvbkt-root", "nvbkf-root"],
  ]);
  const create = qemu.calls.find((c) => c.command === "blockdev-create")!.args!;
  assertEquals(create.options, {
    driver: "qcow2",
    file: "nvbkf-root",
    size: 1 << 20,
    version: "v3",
    "cluster-size": 65536,
  });
  const dels = qemu.calls.filter((c) => c.command === "blockdev-del").map((c) => c.args!);
  assertEquals(dels.map((a) => a["node-name"]), ["nvbkt-root", "nvbkf-root"]);
});

// Bounded: an abort that never reaches QEMU would wait for its jobs forever.
testWithTimeout({
  name: "backup jobs: an abort cancels them; no new bitmap, no file, the parent's kept",
  timeoutMs: 30_000,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = join(await Deno.makeTempDir(), "web1");
  await Deno.mkdir(dir);
  const parentFile = join(dir, "bk-00000000000a.root.qcow2");
  await qemuImg(["create", "-q", "-f", "qcow2", parentFile, String(1 << 20)]);
  const parent = bitmapName("bk-00000000000a");
  const qemu = new FakeQemu([parent], 1_000_000);
  const ctl = new AbortController();
  const req = {
    ...request(dir, ctl.signal, { id: "bk-00000000000a" } as BackupRecord),
    onProgress: (done: number) => {
      if (done > 0) ctl.abort(new Error("aborted by test"));
    },
  };
  await assertRejects(() => runBackupJobs(qemu, req), /aborted by test/);
  const tx = qemu.calls.find((c) => c.command === "transaction")!;
  const backup = (tx.args!.actions as { data: Record<string, unknown> }[])[1].data;
  assertEquals([backup.sync, backup.bitmap], ["incremental", parent]);
  // The overlay names its parent's file relatively (the chain can move as a whole).
  const create = qemu.calls.find((c) => c.command === "blockdev-create")!.args!;
  const options = create.options as Record<string, unknown>;
  assertEquals([options["backing-file"], options["backing-fmt"]], [
    "bk-00000000000a.root.qcow2",
    "qcow2",
  ]);
  assert(qemu.calls.some((c) => c.command === "job-cancel"));
  assertEquals(qemu.bitmaps, [parent]);
  assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["bk-00000000000a.root.qcow2"]);
});

Deno.test("incremental only on the parent's intact bitmap, same disks, same sizes", () => {
  const parent = {
    id: "bk-00000000000a",
    disks: [{ id: "root", virtualBytes: 100 }],
  } as unknown as BackupRecord;
  const bm = (name: string, inconsistent = false): DirtyBitmap => ({
    name,
    count: 0,
    granularity: 65536,
    recording: true,
    persistent: true,
    inconsistent,
  });
  const name = bitmapName(parent.id);
  assertEquals(
    incrementalBlocker(parent, [{ id: "root", virtualBytes: 100, bitmaps: [bm(name)] }]),
    null,
  );
  assert(/no dirty bitmap/.test(
    incrementalBlocker(parent, [{ id: "root", virtualBytes: 100, bitmaps: [] }])!,
  ));
  assert(/inconsistent/.test(
    incrementalBlocker(parent, [{ id: "root", virtualBytes: 100, bitmaps: [bm(name, true)] }])!,
  ));
  assert(/resized/.test(
    incrementalBlocker(parent, [{ id: "root", virtualBytes: 200, bitmaps: [bm(name)] }])!,
  ));
  assert(/not in backup/.test(
    incrementalBlocker(parent, [
      { id: "root", virtualBytes: 100, bitmaps: [bm(name)] },
      { id: "data", virtualBytes: 100, bitmaps: [bm(name)] },
    ])!,
  ));
});

Deno.test(
  "backup jobs: only the transaction inside the freeze; the copy held back until the thaw",
  async () => {
    const dir = join(await Deno.makeTempDir(), "web1");
    const qemu = new FakeQemu([]);
    const log: string[] = [];
    qemu.log = log;
    let thawAnswered = false;
    const agent = {
      ping: () => Promise.resolve(log.push("agent:ping") > 0),
      fsFreeze: () => Promise.resolve(log.push("agent:freeze")),
      fsThaw: async () => {
        log.push("agent:thaw");
        await new Promise((r) => setTimeout(r, 50)); // a slow guest
        thawAnswered = true;
        return 1;
      },
    } as unknown as GuestAgent;
    const req = request(dir, new AbortController().signal);
    const disks = [req.disks[0], { id: "data", node: "data", virtualBytes: 1 << 20 }];
    const r = await runBackupJobs(qemu, { ...req, disks, agent });
    const freeze = log.indexOf("agent:freeze");
    assertEquals(log.slice(freeze, freeze + 3), ["agent:freeze", "transaction", "agent:thaw"]);
    assertEquals(log.filter((c) => c === "blockdev-create").length, 2);
    assert(log.lastIndexOf("blockdev-add") < freeze, "both targets are made before the freeze");
    const backups = (qemu.calls.find((c) => c.command === "transaction")!.args!.actions as {
      type: string;
      data: Record<string, unknown>;
    }[]).filter((a) => a.type === "blockdev-backup");
    assertEquals(backups.map((b) => b.data.speed), [1, 1], "the jobs hold back while it thaws");
    assert(
      log.indexOf("block-job-set-speed") > log.indexOf("agent:thaw"),
      "and run at full speed once the thaw is answered",
    );
    assertEquals(r.disks.map((d) => d.copiedBytes), [1 << 20, 1 << 20]);
    assert(thawAnswered, "the thaw's answer is awaited before the jobs are reported done");
    assert(r.fsFrozen && r.freezeMs !== null && r.freezeMs >= r.freezePhasesMs!.thaw);
  },
);

Deno.test("backup jobs: a target that cannot be made: the guest never froze, nothing left", async () => {
  const dir = join(await Deno.makeTempDir(), "web1");
  const qemu = new FakeQemu([]);
  const log: string[] = [];
  qemu.log = log;
  const execute = qemu.execute.bind(qemu);
  qemu.execute = <T>(command: string, args?: Record<string, unknown>) =>
    command === "blockdev-create"
      ? Promise.reject(new Error("No space left on device"))
      : execute<T>(command, args);
  const agent = {
    ping: () => Promise.resolve(true),
    fsFreeze: () => Promise.resolve(log.push("agent:freeze")),
    fsThaw: () => Promise.resolve(log.push("agent:thaw")),
  } as unknown as GuestAgent;
  await assertRejects(
    () => runBackupJobs(qemu, { ...request(dir, new AbortController().signal), agent }),
    /No space left/,
  );
  assertEquals(log.filter((c) => c.startsWith("agent:")), []);
  assert(!log.includes("transaction"));
  assertEquals([...Deno.readDirSync(dir)], [], "no target file is left");
});

Deno.test("backup jobs: a job done before its release (one request was all) is fine", async () => {
  const dir = join(await Deno.makeTempDir(), "web1");
  const qemu = new FakeQemu([], 0); // concluded at the first look
  const agent = {
    ping: () => Promise.resolve(true),
    fsFreeze: () => Promise.resolve(1),
    fsThaw: () => Promise.resolve(1),
  } as unknown as GuestAgent;
  const r = await runBackupJobs(qemu, { ...request(dir, new AbortController().signal), agent });
  assertEquals(r.disks.length, 1);
  assert(qemu.calls.some((c) => c.command === "block-job-set-speed"));
});

Deno.test("job changes: one that came before the wait ends it at once; reset forgets it", async () => {
  const c = new JobChanges();
  const settled = async (p: Promise<void>) => {
    let done = false;
    p.then(() => done = true);
    for (let i = 0; i < 3; i++) await Promise.resolve();
    return done;
  };
  c.reset(); // a look is sent ...
  c.notify(); // ... and the job ends before its answer came
  assert(await settled(c.wait(60_000)), "the wait does not miss it");
  c.reset(); // the next look sees it
  const waiting = c.wait(60_000);
  await new Promise((r) => setTimeout(r, 10));
  assert(!(await settled(waiting)), "nothing changed since the reset: the wait runs on");
  c.notify();
  await waiting;
});

Deno.test("backup jobs: the replaced bitmaps stay until the caller drops them, once", async () => {
  const dir = join(await Deno.makeTempDir(), "web1");
  const old = bitmapName("bk-00000000000a");
  const qemu = new FakeQemu([old]);
  const req = request(dir, new AbortController().signal);
  const r = await finishBackupJobs(qemu, req, await startBackupJobs(qemu, req));
  assertEquals(qemu.bitmaps, [old, bitmapName("bk-00000000000b")], "kept while it checksums");
  await Promise.all([r.dropOldBitmaps(), r.dropOldBitmaps()]);
  assertEquals(qemu.bitmaps, [bitmapName("bk-00000000000b")]);
  assertEquals(qemu.calls.filter((c) => c.command === "block-dirty-bitmap-remove").length, 1);
});
