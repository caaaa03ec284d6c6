/**
 * Safety checks on an uploaded qcow2 before it may become an image.
 *
 * A qcow2 names other files inside itself: a backing file, or an external
 * data file. QEMU (and qemu-img) open those host paths on the guest's behalf,
 * so an uploaded image whose backing file is `/etc/shadow` would hand that file
 * to the guest. Images are self-contained here; such files are refused.
 *
 * Two layers: the header is read directly first (no tool opens any file the
 * image names), then `qemu-img info` runs under resource limits (a crafted
 * image must not exhaust the host's memory or CPU) and its report is checked
 * again.
 *
 * @module
 */
import { TimeoutError, ValidationError } from "../../core/errors/mod.ts";
import { PROBE_LIMITS, qemuImg } from "./qemu_img.ts";

/** The qcow2 magic, "QFI\xfb". */
const QCOW2_MAGIC = 0x514649fb;
/** Header extension: the external data file's name. */
const EXT_DATA_FILE = 0x44415441;
/** Incompatible feature bit: clusters live in an external data file. */
const INCOMPAT_DATA_FILE = 1n << 2n;
/** How much of the file the header check reads (header + extensions fit in the first cluster). */
const HEADER_READ_BYTES = 64 * 1024;

/** Resource limits for qemu-img probes: address space and CPU seconds. */
const PROBE_TIMEOUT_MS = 60_000;

/** What a checked disk image is. */
export interface DiskImageFacts {
  virtualBytes: number;
}

/**
 * Why a qcow2 file is unsafe to use as an image (backing file, external data
 * file, encryption), or null when it is self-contained. Throws a
 * ValidationError when the file is not qcow2 at all. Reads the header only.
 */
export async function qcow2HeaderProblem(path: string): Promise<string | null> {
  const head = await readHead(path);
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (head.length < 72 || view.getUint32(0) !== QCOW2_MAGIC) {
    throw ValidationError.field("disk", "not a qcow2 image");
  }
  const version = view.getUint32(4);
  if (version !== 2 && version !== 3) return `unsupported qcow2 version ${version}`;
  if (view.getBigUint64(8) !== 0n || view.getUint32(16) !== 0) {
    return "it has a backing file; upload a self-contained image (qemu-img convert -O qcow2)";
  }
  if (view.getUint32(32) !== 0) return "it is encrypted";
  let extAt = 72;
  if (version === 3) {
    if (head.length < 104) return "its header is truncated";
    if ((view.getBigUint64(72) & INCOMPAT_DATA_FILE) !== 0n) {
      return "it has an external data file; upload a self-contained image";
    }
    extAt = view.getUint32(100);
  }
  // Header extensions: type, length, data padded to 8 bytes, until type 0.
  for (let n = 0; n < 1024 && extAt + 8 <= head.length; n++) {
    const type = view.getUint32(extAt);
    const length = view.getUint32(extAt + 4);
    if (type === 0) return null;
    if (type === EXT_DATA_FILE) {
      return "it names an external data file; upload a self-contained image";
    }
    extAt += 8 + Math.ceil(length / 8) * 8;
  }
  return null;
}

/** Whether the file starts with the qcow2 magic (whatever the uploader said it is). */
export async function isQcow2(path: string): Promise<boolean> {
  const head = await readHead(path, 4);
  return head.length === 4 &&
    new DataView(head.buffer, head.byteOffset).getUint32(0) === QCOW2_MAGIC;
}

async function readHead(path: string, bytes = HEADER_READ_BYTES): Promise<Uint8Array> {
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(bytes);
    let got = 0;
    while (got < buf.length) {
      const n = await f.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    f.close();
  }
}

/**
 * Checks an uploaded disk image: qcow2, with no backing file, no external
 * data file and no encryption (header, then `qemu-img info` under
 * {@link PROBE_LIMITS}). Throws a ValidationError (400, field `disk`) saying
 * why it is refused; returns its virtual size.
 */
export async function probeDiskImage(path: string): Promise<DiskImageFacts> {
  const problem = await qcow2HeaderProblem(path);
  if (problem) throw ValidationError.field("disk", `qcow2 image refused: ${problem}`);
  // -f qcow2: no format guessing; -U: no lock needed, the file is ours alone.
  const out = await confinedQemuImg(["info", "--output=json", "-U", "-f", "qcow2", path]);
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(out);
  } catch {
    throw ValidationError.field("disk", "qemu-img could not describe the image");
  }
  const data = (info["format-specific"] as { data?: Record<string, unknown> } | undefined)?.data;
  if (info["format"] !== "qcow2") throw ValidationError.field("disk", "not a qcow2 image");
  if (info["backing-filename"] !== undefined || info["full-backing-filename"] !== undefined) {
    throw ValidationError.field("disk", "qcow2 image refused: it has a backing file");
  }
  if (data?.["data-file"] !== undefined) {
    throw ValidationError.field("disk", "qcow2 image refused: it has an external data file");
  }
  const virtualBytes = info["virtual-size"];
  if (typeof virtualBytes !== "number" || !(virtualBytes > 0)) {
    throw ValidationError.field("disk", "qcow2 image has no virtual size");
  }
  return { virtualBytes };
}

/**
 * Runs qemu-img under the probe limits (qemu_img.ts: address space, CPU time) with a wall-clock
 * deadline. A failure is a 400 on the image (qemu-img refusing a crafted file is the image's
 * fault), carrying qemu-img's first stderr line.
 */
export async function confinedQemuImg(args: string[]): Promise<string> {
  try {
    return await qemuImg(args, PROBE_TIMEOUT_MS, PROBE_LIMITS);
  } catch (err) {
    if (err instanceof TimeoutError) throw err;
    const first = (err as Error).message.split("\n")[0] ?? "";
    throw ValidationError.field("disk", `qemu-img cannot read the image: ${first.slice(0, 300)}`);
  }
}
