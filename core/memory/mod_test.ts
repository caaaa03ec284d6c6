import { assert } from "../testing/assert.ts";
import { keepMemoryTrimmed, openLibc } from "./mod.ts";

Deno.test("memory: on glibc Linux, malloc_trim is reachable and returns freed pages", () => {
  const libc = openLibc();
  assert(libc, "libc.so.6 with malloc_trim (the nodes this project ships for run on glibc)");
  // A freed 64 MiB native buffer: malloc_trim answers 1 when it released memory.
  let buf: Uint8Array | null = new Uint8Array(64 << 20).fill(1);
  assert(buf[buf.length - 1] === 1);
  buf = null;
  const released = libc.symbols.malloc_trim(0);
  assert(released === 0 || released === 1, `malloc_trim answered ${released}`);
  libc.close();
  keepMemoryTrimmed(50)(); // starts and stops without leaving a timer or the library open
});
