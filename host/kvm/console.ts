/**
 * The serial console log of a VM. QEMU appends to `console.log` (O_APPEND),
 * so the node can rotate it under a running QEMU: copy to `console.log.1`,
 * truncate to zero; QEMU's next write lands at the new end. The pair never
 * holds more than twice the limit.
 */
export async function rotateConsole(path: string, maxBytes: number): Promise<boolean> {
  let size: number;
  try {
    size = (await Deno.stat(path)).size;
  } catch {
    return false;
  }
  if (size <= maxBytes) return false;
  await Deno.copyFile(path, path + ".1");
  await Deno.truncate(path, 0);
  return true;
}

/** The last `maxBytes` of the console (previous rotation included). */
export async function readConsole(
  path: string,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array<ArrayBuffer>[] = [];
  for (const p of [path + ".1", path]) {
    try {
      parts.push(await Deno.readFile(p));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const all = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return all.length > maxBytes ? all.subarray(all.length - maxBytes) : all;
}

/**
 * Streams the console from its current end as it grows, until `signal`
 * aborts. Follows truncation by rotation (restarts from offset zero).
 */
export function followConsole(
  path: string,
  signal: AbortSignal,
  fromStart?: Uint8Array,
): ReadableStream<Uint8Array> {
  let offset = -1;
  return new ReadableStream<Uint8Array>({
    async start(controller) {
      if (fromStart) controller.enqueue(fromStart);
      try {
        offset = (await Deno.stat(path)).size;
      } catch {
        offset = 0;
      }
    },
    async pull(controller) {
      while (!signal.aborted) {
        let size = 0;
        try {
          size = (await Deno.stat(path)).size;
        } catch {
          size = 0;
        }
        if (size < offset) offset = 0;
        if (size > offset) {
          const f = await Deno.open(path);
          try {
            await f.seek(offset, Deno.SeekMode.Start);
            const buf = new Uint8Array(Math.min(size - offset, 1 << 16));
            const n = await f.read(buf);
            if (n) {
              offset += n;
              controller.enqueue(buf.subarray(0, n));
              return;
            }
          } finally {
            f.close();
          }
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      controller.close();
    },
  });
}
