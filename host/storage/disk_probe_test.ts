import { join } from "node:path";
import { probeDiskImage, qcow2HeaderProblem } from "./disk_probe.ts";
import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { ValidationError } from "../../core/errors/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

async function qemuImg(...args: string[]): Promise<void> {
  const out = await new Deno.Command("qemu-img", { args, stdout: "null", stderr: "piped" })
    .output();
  assert(out.success, new TextDecoder().decode(out.stderr));
}

async function refusal(path: string): Promise<string> {
  const err = await assertRejects(() => probeDiskImage(path), ValidationError);
  assertEquals((err as ValidationError).issues[0].field, "disk");
  return err.message;
}

testWithTimeout({
  name: "disk probe: a self-contained qcow2 passes with its virtual size",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-probe-" });
  try {
    const ok = join(dir, "ok.qcow2");
    await qemuImg("create", "-q", "-f", "qcow2", ok, "3M");
    assertEquals(await qcow2HeaderProblem(ok), null);
    assertEquals(await probeDiskImage(ok), { virtualBytes: 3 * 1024 * 1024 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "disk probe: backing files, external data files and non-qcow2 files are refused",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-probe-" });
  try {
    const backed = join(dir, "backed.qcow2");
    await qemuImg("create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", backed, "1M");
    assert((await refusal(backed)).includes("backing file"));
    // Each layer alone: the header read (no tool opens the named file) ...
    assert((await qcow2HeaderProblem(backed))?.includes("backing file"));

    const backedQcow = join(dir, "backed2.qcow2");
    const base = join(dir, "base.qcow2");
    await qemuImg("create", "-q", "-f", "qcow2", base, "1M");
    await qemuImg("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", backedQcow);
    assert((await refusal(backedQcow)).includes("backing file"));

    const dataFile = join(dir, "df.qcow2");
    await qemuImg(
      "create",
      "-q",
      "-f",
      "qcow2",
      "-o",
      `data_file=${join(dir, "d.raw")}`,
      dataFile,
      "1M",
    );
    assert((await refusal(dataFile)).includes("external data file"));
    assert((await qcow2HeaderProblem(dataFile))?.includes("external data file"));

    const raw = join(dir, "disk.raw");
    await Deno.writeFile(raw, new Uint8Array(1 << 20));
    assert((await refusal(raw)).includes("not a qcow2"));

    // A header qemu-img itself refuses (cluster_bits 99) is still a 400 on the image.
    const src = join(dir, "src.qcow2");
    await qemuImg("create", "-q", "-f", "qcow2", src, "1M");
    const bytes = await Deno.readFile(src);
    bytes[23] = 99;
    const broken = join(dir, "broken.qcow2");
    await Deno.writeFile(broken, bytes);
    assert((await refusal(broken)).includes("qemu-img cannot read"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
