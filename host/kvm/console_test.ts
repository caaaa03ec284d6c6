import { assertEquals } from "../../core/testing/assert.ts";
import { readConsole, rotateConsole } from "./console.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

testWithTimeout({
  name: "console rotation keeps at most twice the limit and reads back in order",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/console.log`;
  const f = await Deno.open(path, { append: true, create: true });
  const enc = new TextEncoder();
  try {
    let expected = "";
    for (let i = 0; i < 100; i++) {
      const line = `line ${i}\n`;
      expected += line;
      await f.write(enc.encode(line));
      await rotateConsole(path, 64);
    }
    const size = (await Deno.stat(path)).size + (await Deno.stat(path + ".1")).size;
    assertEquals(size <= 2 * 64 + 16, true);
    const text = new TextDecoder().decode(await readConsole(path, 1 << 20));
    assertEquals(expected.endsWith(text), true);
    assertEquals(text.endsWith("line 99\n"), true);
    const tail = new TextDecoder().decode(await readConsole(path, 8));
    assertEquals(tail, "line 99\n");
  } finally {
    f.close();
    await Deno.remove(dir, { recursive: true });
  }
});
