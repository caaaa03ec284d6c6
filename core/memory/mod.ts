/**
 * Hands memory the process freed back to the system. After a burst of large
 * answers (`vm list` of 10,000 VMs is 4.7 MiB of JSON) the JavaScript heap
 * shrinks again, but glibc keeps the freed native buffers in the arenas of the
 * runtime's many threads: a leader measured 420 MiB resident with 66 MiB of heap
 * in use. glibc's `malloc_trim(0)` returns the free pages of every arena;
 * elsewhere (no glibc, no FFI permission) this does nothing.
 *
 * @module
 */
import { log } from "../log/mod.ts";

const TRIM_EVERY_MS = 10_000;

type Libc = { symbols: { malloc_trim: (pad: bigint | number) => number }; close(): void };

/** glibc's malloc_trim through FFI; null where there is none. */
export function openLibc(): Libc | null {
  if (Deno.build.os !== "linux") return null;
  try {
    return Deno.dlopen("libc.so.6", {
      malloc_trim: { parameters: ["usize"], result: "i32" },
    }) as unknown as Libc;
  } catch {
    return null; // musl, or no --allow-ffi
  }
}

/** Trims freed memory now and every few seconds; returns a function that stops it. */
export function keepMemoryTrimmed(everyMs = TRIM_EVERY_MS): () => void {
  const libc = openLibc();
  if (!libc) {
    log.debug("malloc_trim not available: freed native memory stays with the allocator");
    return () => {};
  }
  const timer = setInterval(() => libc.symbols.malloc_trim(0), everyMs);
  Deno.unrefTimer(timer);
  return () => {
    clearInterval(timer);
    libc.close();
  };
}
