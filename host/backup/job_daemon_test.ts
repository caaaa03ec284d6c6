/**
 * The backup jobs against a real `qemu-storage-daemon` (no guest): the target files QEMU
 * formats (`blockdev-create`) are the qcow2 files `qemu-img create` makes, byte for byte; a
 * full backup then an incremental one copy the disk's data and only what changed, and the
 * chain reads back as the disk. (A running VM: tests/backup_test.ts.)
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { assert, assertEquals } from "../../core/testing/assert.ts";
import type { BackupRecord } from "../../core/fsm/mod.ts";
import { qemuImg } from "../storage/qemu_img.ts";
import {
  blockdevAddFile,
  blockdevCreateQcow2,
  blockdevDel,
  jobDismiss,
  queryJobs,
} from "../kvm/commands.ts";
import { runBackupJobs } from "./job.ts";
import { layout } from "./format.ts";
import { StorageDaemon } from "./storage_daemon.ts";

const MiB = 2 ** 20;

async function qemuIo(path: string, cmd: string): Promise<void> {
  const out = await new Deno.Command("qemu-io", {
    args: ["-f", "qcow2", "-c", cmd, path],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
}

Deno.test("backup jobs on a storage daemon: targets as qemu-img makes them; full, then only the changes", async () => {
  const root = await Deno.makeTempDir();
  const disk = join(root, "disk.qcow2");
  const dir = join(root, "target", "vm1");
  await qemuImg(["create", "-q", "-f", "qcow2", disk, String(64 * MiB)]);
  await qemuIo(disk, `write -P 0x11 ${4 * MiB} ${8 * MiB}`);
  const disks = [{ id: "root", node: "root", virtualBytes: 64 * MiB }];
  const req = (id: string, parent: BackupRecord | null) => ({
    id,
    dir,
    disks,
    parent,
    agent: null,
    qemuUser: null,
    signal: new AbortController().signal,
    onProgress: () => {},
  });
  const run = async (id: string, parent: BackupRecord | null) => {
    const d = await StorageDaemon.start([{ node: "root", path: disk }]);
    try {
      return await runBackupJobs(d.qmp, req(id, parent));
    } finally {
      await d.stop();
    }
  };
  const full = await run("bk-00000000000a", null);
  const fullFile = join(dir, layout.file("bk-00000000000a", "root"));
  assertEquals(full.disks[0].file, layout.file("bk-00000000000a", "root"));
  await qemuImg(["check", "-q", fullFile]);
  await qemuImg(["compare", "-q", disk, fullFile]);

  await qemuIo(disk, `write -P 0x22 ${40 * MiB} ${MiB}`);
  const parent = { id: "bk-00000000000a" } as BackupRecord;
  const incr = await run("bk-00000000000b", parent);
  const incrFile = join(dir, layout.file("bk-00000000000b", "root"));
  await qemuImg(["check", "-q", incrFile]);
  const info = JSON.parse(await qemuImg(["info", "--output=json", incrFile]));
  assertEquals(
    [info["backing-filename"], info["backing-filename-format"]],
    [layout.file("bk-00000000000a", "root"), "qcow2"],
  );
  // Only the changed MiB in the overlay; the chain reads as the disk does now.
  assert(incr.disks[0].copiedBytes <= 2 * MiB, `copied ${incr.disks[0].copiedBytes}`);
  assert((await Deno.stat(incrFile)).size < 2 * MiB);
  await qemuImg(["compare", "-q", disk, incrFile]);

  // The empty overlay QEMU formatted before the copy is what qemu-img create makes.
  const made = join(root, "made.qcow2");
  const ref = join(root, "ref.qcow2");
  (await Deno.open(made, { write: true, create: true })).close();
  const d = await StorageDaemon.start([]);
  try {
    await blockdevAddFile(d.qmp, "f", made);
    await blockdevCreateQcow2(d.qmp, "c", "f", 64 * MiB, "parent.qcow2");
    for (let i = 0; (await queryJobs(d.qmp))[0]?.status !== "concluded"; i++) {
      assert(i < 500, "blockdev-create did not conclude");
      await new Promise((r) => setTimeout(r, 10));
    }
    await jobDismiss(d.qmp, "c");
    await blockdevDel(d.qmp, "f");
  } finally {
    await d.stop();
  }
  await qemuImg(["create", "-q", "-f", "qcow2", join(root, "parent.qcow2"), String(64 * MiB)]);
  await qemuImg([
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "qcow2",
    "-b",
    "parent.qcow2",
    ref,
    String(64 * MiB),
  ]);
  const sha = async (p: string) =>
    createHash("sha256").update(await Deno.readFile(p)).digest("hex");
  assertEquals(await sha(made), await sha(ref));
  await Deno.remove(root, { recursive: true });
});
