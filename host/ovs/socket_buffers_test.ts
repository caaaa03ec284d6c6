import { assertEquals } from "../../core/testing/assert.ts";
import { ensureReceiveBufferDefault } from "./socket_buffers.ts";

async function sysctlFile(value: number): Promise<string> {
  const path = await Deno.makeTempFile();
  await Deno.writeTextFile(path, `${value}\n`);
  return path;
}

Deno.test("receive buffer default: raised when below the minimum", async () => {
  const path = await sysctlFile(212_992);
  assertEquals(await ensureReceiveBufferDefault(4_194_304, path), 4_194_304);
  assertEquals((await Deno.readTextFile(path)).trim(), "4194304");
  await Deno.remove(path);
});

Deno.test("receive buffer default: a larger value is never lowered", async () => {
  const path = await sysctlFile(8_388_608);
  assertEquals(await ensureReceiveBufferDefault(4_194_304, path), 8_388_608);
  assertEquals((await Deno.readTextFile(path)).trim(), "8388608");
  await Deno.remove(path);
});

Deno.test("receive buffer default: a setting that cannot be written gives null", async () => {
  // As in a network namespace of a kernel that does not have the setting there.
  const dir = await Deno.makeTempDir();
  assertEquals(await ensureReceiveBufferDefault(4_194_304, `${dir}/missing/rmem_default`), null);
  await Deno.remove(dir);
});
