/**
 * Restoring a chain on its own: a full backup and an incremental overlay converted into one
 * self-contained qcow2 that reads the same as the chain, and an abort that leaves nothing.
 */
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { convertChain } from "./restore.ts";
import { qemuImg } from "../storage/qemu_img.ts";

async function qemuIo(file: string, cmd: string): Promise<void> {
  const out = await new Deno.Command("qemu-io", {
    args: ["-f", "qcow2", "-c", cmd, file],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
}

async function chain(): Promise<{ dir: string; top: string }> {
  const dir = await Deno.makeTempDir();
  const full = join(dir, "full.qcow2");
  const top = join(dir, "incr.qcow2");
  await qemuImg(["create", "-q", "-f", "qcow2", full, String(64 << 20)]);
  await qemuIo(full, "write -P 0x11 0 8M");
  await qemuImg(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "full.qcow2", top, "64M"]);
  await qemuIo(top, "write -P 0x22 4M 1M");
  return { dir, top };
}

Deno.test("restore: the chain converted into one qcow2 reads the same", async () => {
  const { dir, top } = await chain();
  const dst = join(dir, "restored.qcow2");
  let percent = 0;
  await convertChain(top, dst, {
    signal: new AbortController().signal,
    onPercent: (p) => percent = p,
  });
  const cmp = await new Deno.Command("qemu-img", { args: ["compare", top, dst] }).output();
  assert(cmp.success, "the restored image differs from the chain");
  const info = JSON.parse(await qemuImg(["info", "--output=json", dst]));
  assertEquals(info["backing-filename"], undefined, "self-contained");
  assert(percent >= 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("restore: an aborted conversion leaves no file", async () => {
  const { dir, top } = await chain();
  const dst = join(dir, "restored.qcow2");
  const ctl = new AbortController();
  ctl.abort(new Error("stop"));
  await assertRejects(() => convertChain(top, dst, { signal: ctl.signal, onPercent: () => {} }));
  assertEquals(await Deno.stat(dst).then(() => true, () => false), false);
  await Deno.remove(dir, { recursive: true });
});
