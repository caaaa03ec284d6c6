/**
 * Every read command of the tree (each `list`, `show`, `status`, `get`, ...) run with `-o json`
 * against a served one-node cluster prints exactly one JSON document, and with `-o yaml` one YAML
 * document equal to it. Commands the in-process app cannot answer (no hypervisor here) must still
 * fail cleanly: an exit code and nothing on stdout.
 */
import type { Command } from "commander";
import { parse as parseYaml } from "yaml";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { buildProgram } from "./main.ts";
import { cli, servedCluster, withEnv } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

/** A document with what moves between two reads (numbers, timestamps) reduced to its type. */
function settled(v: unknown): unknown {
  if (typeof v === "number") return "number";
  if (typeof v === "string" && /^\d{4}-\d\d-\d\dT[\d:.]+Z$/.test(v)) return "timestamp";
  if (Array.isArray(v)) return v.map(settled);
  if (v && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, settled(x)]));
  }
  return v;
}

/** Read-only leaf commands by name: what they are called across the tree. */
const READS = new Set(["list", "show", "status", "get", "history", "current"]);

function readCommands(root: Command): { path: string[]; args: string[] }[] {
  const out: { path: string[]; args: string[] }[] = [];
  const visit = (cmd: Command, path: string[]) => {
    if (!cmd.commands.length && READS.has(cmd.name())) {
      out.push({
        path,
        args: cmd.registeredArguments.filter((a) => a.required).map((a) => a.name()),
      });
    }
    for (const c of cmd.commands) visit(c, [...path, c.name()]);
  };
  visit(root, []);
  return out;
}

testWithTimeout(
  {
    name: "CLI: every read command's -o json is one JSON document, and -o yaml the same data",
    timeoutMs: 3 * MINUTE,
    sanitizeOps: false,
    sanitizeResources: false,
  },
  async () => {
    const { c, url, stop } = await servedCluster();
    const dir = await Deno.makeTempDir();
    try {
      await withEnv(
        { XDG_CONFIG_HOME: dir, NOVACTL_SERVER: url, NOVACTL_TOKEN: c.adminToken },
        async () => {
          assertEquals((await cli("vm", "create", "web", "--image", "img", "--no-start")).code, 0);
          const sample: Record<string, string> = {
            name: "web",
            vm: "web",
            key: "scheduler.strategy",
            id: "none",
          };
          const node = c.node.fsm.nodes()[0].name;
          let ok = 0;
          const failed: string[] = [];
          for (const { path, args } of readCommands(buildProgram())) {
            const named: Record<string, string> = { node, pool: "dir" };
            const values = args.map((a) => a === "name" ? named[path[0]] ?? "web" : sample[a] ?? a);
            const argv = [...path, ...values];
            const json = await cli(...argv, "-o", "json");
            if (json.code !== 0) {
              assertEquals(json.stdout, "", `${argv.join(" ")} failed but printed: ${json.stdout}`);
              failed.push(`${argv.join(" ")}: ${json.stderr.trim()}`);
              continue;
            }
            let doc: unknown;
            try {
              doc = JSON.parse(json.stdout);
            } catch (err) {
              throw new Error(
                `${argv.join(" ")} -o json: not one JSON document: ${err}\n${json.stdout}`,
              );
            }
            const yaml = await cli(...argv, "-o", "yaml");
            assertEquals(yaml.code, 0, yaml.stderr);
            // Two calls a moment apart: counters and clocks (lastContactMs, times) may move.
            assertEquals(
              settled(parseYaml(yaml.stdout)),
              settled(doc),
              `${argv.join(" ")} -o yaml`,
            );
            ok++;
          }
          console.log(
            `${ok} read commands checked; failing cleanly here:\n  ${failed.join("\n  ")}`,
          );
          assert(ok >= 20, `only ${ok} read commands answered: ${failed.join("; ")}`);
        },
      );
    } finally {
      await stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
