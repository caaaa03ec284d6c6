import type { Command } from "commander";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { buildProgram } from "./main.ts";
import { generatedExample } from "./examples.ts";
import { cli } from "./testing.ts";

function all(cmd: Command, path: string[] = []): { cmd: Command; path: string[] }[] {
  return cmd.commands.flatMap((
    c,
  ) => [{ cmd: c, path: [...path, c.name()] }, ...all(c, [...path, c.name()])]);
}

Deno.test("--help: every command shows examples and the global flags", async () => {
  const program = buildProgram();
  const cmds = all(program).filter(({ cmd }) => !(cmd as unknown as { _hidden: boolean })._hidden);
  assert(cmds.length > 100, `${cmds.length} commands`);
  for (const { path } of [{ path: [] as string[] }, ...cmds]) {
    const r = await cli(...path, "--help");
    assertEquals(r.code, 0, `${path.join(" ")}: ${r.stderr}`);
    const examples = r.stdout.split("\nExamples:\n")[1];
    assert(examples?.includes("novactl "), `${path.join(" ")} --help has no example`);
    if (path.length) {
      assert(/--context <name>/.test(r.stdout), `${path.join(" ")}: no global flags`);
    }
  }
});

Deno.test("generated examples fill in arguments and required options", () => {
  const program = buildProgram();
  const find = (...path: string[]) =>
    path.reduce((c: Command, n) => c.commands.find((s) => s.name() === n)!, program);
  assertEquals(
    generatedExample(find("vm", "snapshot", "delete")),
    "novactl vm snapshot delete web before-upgrade",
  );
  assertEquals(generatedExample(find("node", "cordon")), "novactl node cordon n1");
  assert(/--driver dir/.test(generatedExample(find("pool", "create"))));
});
