/**
 * Output formats and list flags against a stand-in server: global flags before or after the
 * subcommand, `-o json|yaml|name|wide`, `--no-headers`, `-q`, and `vm list` filters and pages.
 */
import { parse as parseYaml } from "yaml";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli, standIn, withEnv } from "./testing.ts";
import { namesOf } from "./output.ts";

const VMS = [
  { name: "a1", node: "n1", state: "running", desired: "running", cpus: 1, labels: { t: "x" } },
  { name: "a2", node: "n1", state: "stopped", desired: "stopped", cpus: 2, ha: true },
  { name: "a3", node: "n2", state: "running", desired: "running", cpus: 4 },
];

async function withStandIn(fn: (url: string, s: ReturnType<typeof standIn>) => Promise<void>) {
  const s = standIn("x", VMS);
  const dir = await Deno.makeTempDir();
  try {
    await withEnv(
      { XDG_CONFIG_HOME: dir, NOVACTL_SERVER: undefined, NOVACTL_CONTEXT: undefined },
      () => fn(s.url, s),
    );
  } finally {
    await s.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("global flags stand before or after the subcommand, with the same result", async () => {
  await withStandIn(async (url) => {
    const before = await cli("--server", url, "--token", "t", "-o", "json", "vm", "list");
    const middle = await cli("vm", "--server", url, "list", "-o", "json", "--token", "t");
    const after = await cli("vm", "list", "--server", url, "--token", "t", "--output", "json");
    for (const r of [before, middle, after]) assertEquals([r.code, r.stderr], [0, ""]);
    assertEquals(middle.stdout, before.stdout);
    assertEquals(after.stdout, before.stdout);
    assertEquals(JSON.parse(before.stdout).vms.length, 3);
  });
});

Deno.test("-o json and -o yaml print one document; -o name and -q the names", async () => {
  await withStandIn(async (url) => {
    const run = async (...args: string[]) => {
      const r = await cli(...args, "--server", url, "--token", "t");
      assertEquals([r.code, r.stderr], [0, ""], r.stderr);
      return r.stdout;
    };
    const json = JSON.parse(await run("vm", "list", "-o", "json"));
    assertEquals(json.vms.map((v: { name: string }) => v.name), ["a1", "a2", "a3"]);
    assertEquals(parseYaml(await run("vm", "list", "-o", "yaml")), json);
    assertEquals(await run("vm", "list", "-o", "name"), "a1\na2\na3\n");
    assertEquals(await run("vm", "list", "-q"), "a1\na2\na3\n");
    assertEquals(await run("node", "list", "-q"), "x-node\n");
  });
});

Deno.test("tables: --no-headers drops the header; -o wide adds the other plain columns", async () => {
  await withStandIn(async (url) => {
    const run = async (...args: string[]) =>
      (await cli(...args, "--server", url, "--token", "t")).stdout.trimEnd().split("\n");
    const table = await run("vm", "list");
    assert(/^NAME\s+NODE\s+STATE/.test(table[0]), table[0]);
    assertEquals(table.length, 4);
    const bare = await run("vm", "list", "--no-headers");
    assert(!bare.some((l) => l.includes("NAME")), bare.join("\n"));
    assertEquals(bare.length, 3);
    assert(bare[0].startsWith("a1 "), bare[0]);
    const wide = await run("vm", "list", "-o", "wide");
    assert(/\bHA\b/.test(wide[0]) && !/LABELS/.test(wide[0]), wide[0]);
  });
});

Deno.test("vm list: filters go to the server; every page is fetched unless --limit", async () => {
  await withStandIn(async (url, s) => {
    let r = await cli("vm", "list", "-q", "--server", url, "--node", "n1", "--state", "running");
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stdout, "a1\na2\na3\n", "the stand-in ignores filters and has two pages");
    const first = s.seen.find((q) => q.path === "/api/v1/vms")!;
    assertEquals([first.query.get("node"), first.query.get("state")], ["n1", "running"]);
    assertEquals(s.seen.filter((q) => q.path === "/api/v1/vms").length, 2);
    r = await cli("vm", "list", "-q", "--server", url, "-l", "t=x", "-l", "u=y", "--limit", "2");
    assertEquals(r.stdout, "a1\na2\n");
    const pages = s.seen.filter((q) => q.path === "/api/v1/vms").length;
    r = await cli("vm", "list", "-q", "--server", url, "--limit", "3");
    assertEquals(r.stdout, "a1\na2\na3\n", "a limit past the server's page size follows pages");
    assertEquals(s.seen.filter((q) => q.path === "/api/v1/vms").length, pages + 2);
    r = await cli("vm", "list", "-q", "--server", url, "-l", "t=x", "-l", "u=y", "--limit", "2");
    assertEquals(s.seen.at(-1)!.query.getAll("label"), ["t=x", "u=y"]);
    assertEquals(s.seen.at(-1)!.query.get("limit"), "2");
  });
});

Deno.test("namesOf: a named object, an array, or a list envelope's items", () => {
  assertEquals(namesOf({ name: "web", nics: [{ name: "eth0" }] }), ["web"]);
  assertEquals(namesOf({ vms: [{ name: "a" }, { name: "b" }], continue: "x" }), ["a", "b"]);
  assertEquals(namesOf([{ id: "op1" }, "plain"]), ["op1", "plain"]);
  assertEquals(namesOf(null), []);
});
