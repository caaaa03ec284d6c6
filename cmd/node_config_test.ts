import type { Command } from "commander";
import { assert, assertEquals, assertRejects, assertThrows } from "../core/testing/assert.ts";
import { ValidationError } from "../core/errors/mod.ts";
import { buildProgram } from "./main.ts";
import { cli } from "./testing.ts";
import { attributeOf, nodeConfigSchema, parseNodeConfig, withNodeConfig } from "./node_config.ts";

function nodeStart(program: Command): Command {
  const node = program.commands.find((c) => c.name() === "node")!;
  return node.commands.find((c) => c.name() === "start")!;
}

Deno.test("node config: every node start flag has a key, and every key a flag", () => {
  const flags = nodeStart(buildProgram()).options.map((o) => o.long!.slice(2))
    .filter((f) => f !== "config");
  assertEquals([...flags].sort(), Object.keys(nodeConfigSchema.shape).sort());
});

Deno.test("node config: a valid file parses, with flag names as keys", () => {
  const c = parseNodeConfig(
    [
      "name: n1",
      "data-dir: /var/lib/novactl",
      "listen: 0.0.0.0:7070",
      "networking: off",
      "insecure-http: false",
      "label: { rack: r1 }",
      "ovn-ports: 7641,7642,7643,7644",
      "log-level: debug",
    ].join("\n"),
    "node.yaml",
  );
  assertEquals(c.name, "n1");
  assertEquals(c["data-dir"], "/var/lib/novactl");
  assertEquals(c.networking, false);
  assertEquals(c.label, { rack: "r1" });
  assertEquals(c["ovn-ports"], { nb: 7641, sb: 7642, nbRaft: 7643, sbRaft: 7644 });
  assertEquals(parseNodeConfig("", "node.yaml"), {}); // an empty file sets nothing
});

Deno.test("node config: a bad value names the file and the key", () => {
  const err = assertThrows(() => parseNodeConfig("data-dir: 5\n", "node.yaml"), ValidationError);
  assertEquals(err.message, "node.yaml: data-dir: expected a string");
  assertEquals(err.issues, [{ field: "node.yaml: data-dir", message: "expected a string" }]);
  const ports = assertThrows(() => parseNodeConfig("ovn-ports: 1,2\n", "f"), ValidationError);
  assert(ports.message.startsWith("f: ovn-ports: "), ports.message);
  const level = assertThrows(() => parseNodeConfig("log-level: loud\n", "f"), ValidationError);
  assert(level.message.includes("log-level: expected one of"), level.message);
  const label = assertThrows(() => parseNodeConfig("label: { n: 1 }\n", "f"), ValidationError);
  assertEquals(label.message, "f: label.n: expected a string");
});

Deno.test("node config: an unknown key is named, with the spelling meant", () => {
  const camel = assertThrows(() => parseNodeConfig("dataDir: /x\n", "node.yaml"), ValidationError);
  assertEquals(
    camel.message,
    'node.yaml: dataDir: unknown key "dataDir" (did you mean "data-dir"?)',
  );
  const typo = assertThrows(() => parseNodeConfig("dataDirr: /x\n", "node.yaml"), ValidationError);
  assert(typo.message.includes('unknown key "dataDirr" (known keys: name, data-dir'), typo.message);
  const list = assertThrows(() => parseNodeConfig("- a\n- b\n", "f"), ValidationError);
  assertEquals(list.message, "f: expected a mapping of option names to values");
  const yaml = assertThrows(() => parseNodeConfig("a: [\n", "f"), ValidationError);
  assert(yaml.message.startsWith("f: not YAML"), yaml.message);
});

Deno.test("node config: flags on the command line override the file", async () => {
  const program = buildProgram();
  let merged: Record<string, unknown> = {};
  nodeStart(program).action((flags: Record<string, unknown>, cmd: Command) => {
    const config = parseNodeConfig(
      "name: file\ndata-dir: /file\nlisten: 1.2.3.4:1\nsimulated-cpus: 8\nlabel: {a: file, b: file}\n",
      "f",
    );
    merged = withNodeConfig(cmd, flags, config);
  });
  await program.parseAsync(
    ["node", "start", "--name", "flag", "--label", "b=flag", "--label", "c=flag"],
    { from: "user" },
  );
  assertEquals(merged.name, "flag");
  assertEquals(merged.dataDir, "/file");
  assertEquals(merged.listen, "1.2.3.4:1"); // the file beats commander's default
  assertEquals(merged.simulatedCpus, 8);
  assertEquals(merged.label, { a: "file", b: "flag", c: "flag" });
  assertEquals(attributeOf("tunnel-interface"), "tunnelInterface");
});

Deno.test("node start: a bad config file fails before anything starts, naming the field", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/node.yaml`;
    await Deno.writeTextFile(file, `name: n1\ndata-dir: ${dir}/data\ndataDirr: x\n`);
    const r = await cli("node", "start", "--config", file);
    assertEquals(r.code, 1);
    assert(r.stderr.includes(`${file}: dataDirr: unknown key "dataDirr"`), r.stderr);
    await assertRejects(() => Deno.stat(`${dir}/data`), Deno.errors.NotFound);
    const missing = await cli("node", "start", "--config", `${dir}/absent.yaml`);
    assertEquals(missing.code, 1);
    assert(missing.stderr.includes("config: cannot read"), missing.stderr);
    await Deno.writeTextFile(file, `data-dir: ${dir}/data\n`);
    const noName = await cli("node", "start", "--config", file);
    assertEquals(noName.code, 2);
    assert(noName.stderr.includes("node start needs --name (or name: in --config)"), noName.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
