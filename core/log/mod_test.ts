import { assertEquals } from "../testing/assert.ts";

/** Runs a tiny program that logs, and returns its stderr lines' messages. */
async function logged(code: string): Promise<string[]> {
  const mod = new URL("./mod.ts", import.meta.url).href;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `import { log, flushLogs } from "${mod}";\n${code}`],
    stderr: "piped",
    stdout: "null",
  }).output();
  return new TextDecoder().decode(out.stderr).trim().split("\n").filter(Boolean)
    .map((l) => JSON.parse(l).msg);
}

Deno.test("log lines come out in order; info waits for the end of the turn, warn does not", async () => {
  // Deno.exit right after an info line: only an explicit flush saves it.
  assertEquals(await logged(`log.info("a"); log.info("b"); flushLogs(); Deno.exit(0);`), [
    "a",
    "b",
  ]);
  assertEquals(await logged(`log.info("a"); log.info("b"); Deno.exit(0);`), []);
  // A warning writes what came before it, in order, at once.
  assertEquals(await logged(`log.info("a"); log.warn("w"); Deno.exit(0);`), ["a", "w"]);
  // Left to itself, the process writes every line before it ends.
  assertEquals(await logged(`log.info("a"); await null; log.debug("d"); log.info("b");`), [
    "a",
    "b",
  ]);
});
