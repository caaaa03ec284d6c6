/**
 * Completion scripts: the bash script loads (`source <(novactl completion bash)`) and completes
 * subcommands, flags, enum values and, through `novactl __complete`, resource names from the
 * server the typed flags name; zsh and fish scripts parse in those shells (scripts/setup.sh).
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { buildProgram } from "./main.ts";
import { bashCompletion, completionTree, fishCompletion, zshCompletion } from "./completion.ts";
import { cli, standIn, withEnv } from "./testing.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** A `novactl` launcher on PATH, as an installed one would be. */
async function launcherDir(): Promise<string> {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(
    `${dir}/novactl`,
    `#!/bin/sh\nexec "${Deno.execPath()}" run -A --quiet "${MAIN}" "$@"\n`,
    { mode: 0o755 },
  );
  return dir;
}

async function sh(
  shell: string,
  script: string,
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(shell, {
    args: ["-c", script],
    env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}

async function installed(shell: string): Promise<boolean> {
  try {
    return (await new Deno.Command(shell, { args: ["-c", "true"] }).output()).success;
  } catch {
    return false;
  }
}

Deno.test("completion bash: the script from the real CLI loads and registers novactl", async () => {
  const bin = await launcherDir();
  try {
    const r = await sh("bash", "source <(novactl completion bash); complete -p novactl", {
      PATH: `${bin}:${Deno.env.get("PATH")}`,
    });
    assertEquals(r.code, 0, r.err);
    assertEquals(r.err, "");
    assertEquals(r.out.trim(), "complete -o default -F _novactl novactl");
  } finally {
    await Deno.remove(bin, { recursive: true });
  }
});

Deno.test("completion bash: subcommands, flags, enum values and names from the server", async () => {
  const bin = await launcherDir();
  const s = standIn("x", [{ name: "web" }, { name: "db" }]);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/novactl.bash`, bashCompletion(buildProgram()));
    const complete = async (...words: string[]) => {
      const line = words.map((w) => `'${w}'`).join(" ");
      const r = await sh(
        "bash",
        `source ${dir}/novactl.bash; COMP_WORDS=(${line}); COMP_CWORD=${words.length - 1}; ` +
          `_novactl; printf '%s\\n' "\${COMPREPLY[@]}"`,
        { PATH: `${bin}:${Deno.env.get("PATH")}`, XDG_CONFIG_HOME: dir },
      );
      assertEquals(r.code, 0, r.err);
      return r.out.trim().split("\n").filter(Boolean).sort();
    };
    assertEquals(await complete("novactl", "vm", "st"), ["start", "stats", "stop"]);
    assertEquals(await complete("novactl", "con"), ["config", "context"]);
    assertEquals(
      await complete("novactl", "context", ""),
      ["add", "current", "list", "ls", "remove", "rm", "use"].sort(),
    );
    assertEquals(
      await complete("novactl", "vm", "create", "x", "--restart-policy", ""),
      ["always", "never", "on-failure"],
    );
    assertEquals(await complete("novactl", "-o", "y"), ["yaml"]);
    assertEquals(await complete("novactl", "vm", "list", "--state", "run"), ["running"]);
    const flags = await complete("novactl", "vm", "create", "x", "--ha-p");
    assertEquals(flags, ["--ha-priority"]);
    // A global flag is offered on every command.
    assertEquals(await complete("novactl", "vm", "list", "--con"), ["--context"]);
    // Names come from the server named by the flags typed so far, via __complete.
    assertEquals(await complete("novactl", "--server", s.url, "vm", "start", ""), ["db", "web"]);
    assertEquals(await complete("novactl", "vm", "show", "w", "--server", s.url), []);
    assertEquals(await complete("novactl", "--server", s.url, "vm", "show", "w"), ["web"]);
    assertEquals(
      await complete("novactl", "--server", s.url, "vm", "create", "x", "--node", ""),
      ["x-node"],
    );
    // A new name (create) completes to nothing from the server.
    assertEquals(await complete("novactl", "--server", s.url, "vm", "create", ""), []);
  } finally {
    await s.close();
    await Deno.remove(bin, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("__complete: names one per line; an unreachable server completes nothing, quietly", async () => {
  const s = standIn("x", [{ name: "web" }]);
  const dir = await Deno.makeTempDir();
  try {
    await withEnv({ XDG_CONFIG_HOME: dir, NOVACTL_SERVER: undefined }, async () => {
      assertEquals((await cli("__complete", "vms", "--server", s.url)).stdout, "web\n");
      assertEquals((await cli("__complete", "images", "--server", s.url)).stdout, "x-image\n");
      const down = await cli("__complete", "vms", "--server", "http://127.0.0.1:9");
      assertEquals([down.code, down.stdout, down.stderr], [0, "", ""]);
      const help = await cli("--help");
      assert(!help.stdout.includes("__complete"), "hidden from --help");
    });
  } finally {
    await s.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("completion: the tree covers every command, with choices and resource kinds", () => {
  const tree = completionTree(buildProgram());
  const at = (path: string) => tree.find((n) => n.path === path)!;
  assert(at("").subcommands.includes("vm") && at("").subcommands.includes("completion"));
  assert(!at("").subcommands.includes("__complete"));
  assertEquals(at("vm start").args, ["@vms"]);
  assertEquals(at("vm create").args, [""]);
  assertEquals(at("vm create").values["--node"], "@nodes");
  assertEquals(at("token create").values["--role"], "viewer operator admin");
  assertEquals(at("completion").args, ["bash zsh fish"]);
});

Deno.test("completion zsh and fish: the scripts parse in their shells", async () => {
  // scripts/setup.sh installs both; a machine without them fails here rather than skipping.
  for (const shell of ["zsh", "fish"]) {
    if (!(await installed(shell))) throw new Error(`${shell} is missing: run scripts/setup.sh`);
  }
  const program = buildProgram();
  const dir = await Deno.makeTempDir();
  try {
    {
      await Deno.writeTextFile(`${dir}/_novactl`, zshCompletion(program));
      const r = await sh(
        "zsh",
        `autoload -U compinit && compinit -u -d ${dir}/zcompdump; source ${dir}/_novactl; ` +
          `print -r -- \${_comps[novactl]}`,
      );
      assertEquals([r.code, r.out.trim()], [0, "_novactl"], r.err);
      // Outside a completion widget: a compadd that prints what it was given.
      const offered = await sh(
        "zsh",
        `source ${dir}/_novactl; compadd() { shift $(( $# - 1 )); print -l -- \${(P)1}; }; ` +
          `words=(novactl vm create x --restart-policy ''); CURRENT=6; _novactl`,
      );
      assertEquals(offered.out.trim().split("\n"), ["never", "on-failure", "always"], offered.err);
    }
    {
      await Deno.writeTextFile(`${dir}/novactl.fish`, fishCompletion(program));
      const r = await sh("fish", `source ${dir}/novactl.fish; complete -C 'novactl vm st'`);
      assertEquals(r.code, 0, r.err);
      const words = r.out.trim().split("\n").map((l) => l.split("\t")[0]).sort();
      assertEquals(words, ["start", "stats", "stop"]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
