/**
 * The global flags reach every action's options wherever they stand, and a command's own option
 * of the same name (`node start --token JOINTOKEN`) takes only what was typed: the API token's
 * environment variable is not a join token.
 */
import type { Command } from "commander";
import { assertEquals } from "../core/testing/assert.ts";
import { buildProgram } from "./main.ts";
import { withEnv } from "./testing.ts";

/** Parses argv with `path`'s action replaced by one that returns its options. */
async function optsOf(path: string[], argv: string[]): Promise<Record<string, unknown>> {
  const program = buildProgram();
  let cmd: Command = program;
  for (const name of path) cmd = cmd.commands.find((c) => c.name() === name)!;
  let seen: Record<string, unknown> = {};
  cmd.action((...args: unknown[]) => {
    seen = args.at(-2) as Record<string, unknown>;
  });
  await program.parseAsync(argv, { from: "user" });
  return seen;
}

Deno.test("global flags: an action sees them whether they stand before or after it", async () => {
  await withEnv({ NOVACTL_SERVER: undefined, NOVACTL_TOKEN: undefined }, async () => {
    for (
      const argv of [
        ["--server", "http://s:1", "-o", "yaml", "--no-headers", "vm", "show", "web"],
        ["vm", "show", "web", "--server", "http://s:1", "-o", "yaml", "--no-headers"],
        ["vm", "--server", "http://s:1", "show", "--output", "yaml", "web", "--no-headers"],
      ]
    ) {
      const o = await optsOf(["vm", "show"], argv);
      assertEquals([o.server, o.output, o.headers], ["http://s:1", "yaml", false], argv.join(" "));
    }
    const o = await optsOf(["vm", "show"], ["vm", "show", "web"]);
    assertEquals([o.server, o.output, o.headers], [undefined, "table", true]);
  });
});

Deno.test("global flags: the environment fills them; node start's --token stays a join token", async () => {
  await withEnv({ NOVACTL_SERVER: "http://env:1", NOVACTL_TOKEN: "api-token" }, async () => {
    const list = await optsOf(["vm", "list"], ["vm", "list"]);
    assertEquals([list.server, list.token], ["http://env:1", "api-token"]);
    const start = ["node", "start", "--name", "n", "--data-dir", "/tmp/d"];
    assertEquals((await optsOf(["node", "start"], start)).token, undefined);
    const joining = await optsOf(["node", "start"], [
      ...start,
      "--join",
      "https://h:1",
      "--token",
      "J",
    ]);
    assertEquals(joining.token, "J");
  });
});

Deno.test("--wait, --no-wait and --timeout DURATION: the same flags wherever a command waits", () => {
  const visit = (cmd: Command, path: string[]): string[][] =>
    cmd.commands.flatMap((c) => [[...path, c.name()], ...visit(c, [...path, c.name()])]);
  const program = buildProgram();
  let checked = 0;
  for (const path of visit(program, [])) {
    const cmd = path.reduce((c: Command, n) => c.commands.find((s) => s.name() === n)!, program);
    const timeout = cmd.options.find((o) => o.long === "--timeout");
    if (!timeout) continue;
    assertEquals(timeout.parseArg!("5m", undefined), 300, path.join(" "));
    if (path.at(-1) === "wait") continue; // `vm wait`, `operation wait`: waiting is the command
    const flags = cmd.options.map((o) => o.long);
    assertEquals(
      [flags.includes("--wait"), flags.includes("--no-wait")],
      [true, true],
      path.join(" "),
    );
    checked++;
  }
  assertEquals(checked >= 11, true, `${checked} commands wait`);
});
