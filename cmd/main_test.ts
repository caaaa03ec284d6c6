/**
 * The CLI in-process: the real command tree (runCli) against the real API app
 * of a one-voter leader served on a free port. What is checked is the
 * contract of SPEC.md: exit 0 / 1 (the server or the operation failed) / 2
 * (bad usage), `-o json` prints exactly one JSON document, tables for people,
 * and an error is one line on stderr.
 */
import { InvalidArgumentError } from "commander";
import { assert, assertEquals, assertThrows } from "../core/testing/assert.ts";
import { runCli } from "./main.ts";
import { capture, type Run, servedCluster } from "./testing.ts";
import { printTable } from "./output.ts";
import { collectNic, parseDiskGiB, parseMemoryMiB } from "./vm.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

/** Exactly one JSON document on stdout (JSON.parse takes no trailing second one). */
function oneDocument(r: Run): Record<string, unknown> {
  assertEquals([r.code, r.stderr], [0, ""], r.stderr);
  return JSON.parse(r.stdout);
}

/** An error: the exit code, nothing on stdout, one line on stderr. */
function oneErrorLine(r: Run, code: number): string {
  assertEquals(r.code, code, r.stderr);
  assertEquals(r.stdout, "");
  const lines = r.stderr.trimEnd().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  assert(lines[0].startsWith("error: "), lines[0]);
  return lines[0];
}

/** What commander prints under a usage error (showHelpAfterError in cmd/main.ts). */
const USAGE_HINT = "(run with --help for usage)";

const opts = { sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "CLI: flags become the request; -o json prints one document",
    ...opts,
  },
  async (t) => {
    const { c, cli, stop } = await servedCluster();
    try {
      await t.step("vm create maps every flag onto the API body", async () => {
        const r = await cli(
          "vm",
          "create",
          "web",
          "--image",
          "img",
          "--cpus",
          "2",
          "--memory",
          "1G",
          "--disk-size",
          "3G",
          "--no-start",
          "--label",
          "tier=front",
          "--label",
          "team=a=b",
          "--constraint",
          "zone!=b",
          "--strategy",
          "pack",
          "--ha-priority",
          "7",
          "-o",
          "json",
        );
        const doc = oneDocument(r);
        assertEquals(doc.name, "web");
        const vm = c.node.fsm.vm("web")!;
        assertEquals([vm.cpus, vm.memoryMiB, vm.desired], [2, 1_024, "stopped"]);
        assertEquals(vm.disks[0].sizeBytes, 3 * 2 ** 30);
        assertEquals(vm.labels, { tier: "front", team: "a=b" });
        assertEquals(vm.constraints, [{ key: "zone", op: "!=", value: "b" }]);
        assertEquals([vm.strategy, vm.haPriority], ["pack", 7]);
      });

      for (
        const args of [
          ["cluster", "status"],
          ["vm", "list"],
          ["vm", "show", "web"],
          ["node", "list"],
          ["config", "get"],
          ["group", "list"],
          ["operation", "list"],
        ]
      ) {
        await t.step(`${args.join(" ")} -o json → exactly one JSON document`, async () => {
          oneDocument(await cli(...args, "-o", "json"));
        });
      }

      await t.step("cluster status -o json has the fields the contract names", async () => {
        const doc = oneDocument(await cli("cluster", "status", "-o", "json"));
        for (const k of ["leader", "term", "commitIndex", "members"]) assert(k in doc, k);
        assertEquals(doc.leader, "n1");
      });

      await t.step("vm list as a table: a header and one aligned row per VM", async () => {
        const r = await cli("vm", "list");
        assertEquals(r.code, 0, r.stderr);
        const [header, ...rows] = r.stdout.trimEnd().split("\n");
        assertEquals(header.split(/\s+/), [
          "NAME",
          "NODE",
          "STATE",
          "DESIRED",
          "CPUS",
          "MEMORYMIB",
          "IMAGE",
        ]);
        assertEquals(rows.length, 1);
        const state = c.node.fsm.vm("web")!.state;
        assertEquals(rows[0].split(/\s+/).slice(0, 4), ["web", "n1", state, "stopped"]);
        assertEquals(rows[0].indexOf("n1"), header.indexOf("NODE"), "columns line up");
      });
    } finally {
      await stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "CLI: exit 2 for bad usage, 1 for server errors, one line on stderr",
    ...opts,
  },
  async (t) => {
    const { c, url, cli, stop } = await servedCluster();
    try {
      await t.step("bad usage exits 2 and sends nothing", async () => {
        const before = c.node.fsm.vms().length;
        const usage = [
          ["vm", "create", "x", "--image", "img", "--cpus", "0"],
          ["vm", "create", "x", "--image", "img", "--memory", "12X"],
          ["vm", "create", "x", "--image", "img", "--label", "novalue"],
          ["vm", "create", "x", "--image", "img", "--bogus"],
          ["vm", "create"],
          ["vm", "frobnicate", "x"],
          ["vm", "list", "-o", "xml"],
          ["vm", "list", "--state", "sleeping"],
          ["vm", "create", "x", "--image", "img", "--restart-policy", "banana"],
          ["vm", "create", "x", "--image", "img", "--ha-priority", "abc"],
          ["vm", "create", "x", "--image", "img", "--wait", "--timeout", "soon"],
          ["config", "set", "onlykey"],
        ];
        for (const args of usage) {
          const r = await cli(...args);
          assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
          assertEquals(r.stdout, "", args.join(" "));
          // One error line; commander may add its fixed hint line after it.
          const lines = r.stderr.trimEnd().split("\n");
          assertEquals(lines.filter((l) => l.startsWith("error: ")).length, 1, r.stderr);
          assert(lines.every((l) => l.startsWith("error: ") || l === USAGE_HINT), r.stderr);
        }
        assertEquals(c.node.fsm.vms().length, before);
      });

      await t.step("a usage error found after parsing is 2 and one line", async () => {
        const line = oneErrorLine(await cli("vm", "clone", "a", "b", "--linked", "--full"), 2);
        assert(/--linked or --full/.test(line), line);
      });

      await t.step("--help and --version exit 0", async () => {
        const help = await capture(() => runCli(["vm", "create", "--help"]));
        assertEquals(help.code, 0);
        assert(/--ha-max-restarts/.test(help.stdout), help.stdout);
        assertEquals((await capture(() => runCli(["--version"]))).code, 0);
      });

      await t.step("not found → 1, with -o json too: stdout stays empty", async () => {
        const line = oneErrorLine(await cli("vm", "show", "ghost", "-o", "json"), 1);
        assertEquals(line, 'error: vm "ghost" not found');
      });

      await t.step("a 400 naming several fields → 1, the fields on the same line", async () => {
        const r = await cli("vm", "create", "Bad_Name", "--image", "img", "--ha-priority", "5000");
        const line = oneErrorLine(r, 1);
        assert(/\(haPriority, name\)|\(name, haPriority\)/.test(line), line);
      });

      await t.step("a wrong token → 1 unauthorized", async () => {
        const r = await capture(() => runCli(["vm", "list", "--server", url, "--token", "nope"]));
        assert(/invalid API token/.test(oneErrorLine(r, 1)));
      });

      await t.step("NOVACTL_SERVER and NOVACTL_TOKEN stand in for the flags", async () => {
        Deno.env.set("NOVACTL_SERVER", url);
        Deno.env.set("NOVACTL_TOKEN", c.adminToken);
        try {
          oneDocument(await capture(() => runCli(["vm", "list", "-o", "json"])));
        } finally {
          Deno.env.delete("NOVACTL_SERVER");
          Deno.env.delete("NOVACTL_TOKEN");
        }
      });

      await t.step("an unreachable server → 1, naming it", async () => {
        const r = await capture(() => runCli(["vm", "list", "--server", "http://127.0.0.1:1"]));
        assert(/cannot reach http:\/\/127\.0\.0\.1:1/.test(oneErrorLine(r, 1)));
      });
    } finally {
      await stop();
    }
  },
);

testWithTimeout({
  name:
    "CLI sizes: M/G for memory in MiB, G/T for disks in GiB (decimals too), anything else refused",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertEquals(
    ["256", "256M", "256MiB", "2G", "2gib", "1.5G"].map(parseMemoryMiB),
    [256, 256, 256, 2_048, 2_048, 1_536],
  );
  assertEquals(["20", "20G", "1T", "1TiB"].map(parseDiskGiB), [20, 20, 1_024, 1_024]);
  for (const bad of ["", "0", "-1", "2K", "lots", "1.5X"]) {
    assertThrows(() => parseMemoryMiB(bad), InvalidArgumentError);
  }
  assertThrows(() => parseDiskGiB("10M"), InvalidArgumentError);
});

testWithTimeout({
  name: "CLI --nic: NETWORK[,ip=IP][,mac=MAC][,sg=G[+G]], repeatable; anything else refused",
  timeoutMs: 2 * MINUTE,
}, () => {
  const one = collectNic("blue", []);
  assertEquals(one, [{ network: "blue" }]);
  assertEquals(collectNic("v100,ip=10.0.0.9,mac=02:6e:76:00:00:09", one), [
    { network: "blue" },
    { network: "v100", ip: "10.0.0.9", mac: "02:6e:76:00:00:09" },
  ]);
  assertEquals(collectNic("blue,sg=web+db,sg=ssh", []), [
    { network: "blue", securityGroups: ["web", "db", "ssh"] },
  ]);
  for (const bad of ["", "ip=10.0.0.9", "blue,sg", "blue,ip", "blue,,ip=1.2.3.4", "blue,acl=x"]) {
    assertThrows(() => collectNic(bad, []), InvalidArgumentError);
  }
});

testWithTimeout({
  name: "tables: upper-case headers, aligned columns, '-' for missing, objects as JSON",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const r = await capture(() => {
    printTable([
      { name: "a", node: null, labels: { x: "1" } },
      { name: "longer-name", node: "n1" },
    ], ["name", "node", "labels"]);
    return Promise.resolve(0);
  });
  assertEquals(r.stdout.split("\n"), [
    "NAME         NODE  LABELS",
    'a            -     {"x":"1"}',
    "longer-name  n1    -",
    "",
  ]);
});

testWithTimeout(
  { timeoutMs: 2 * MINUTE, name: "CLI: backup targets, schedules and refusals", ...opts },
  async (t) => {
    const { c, cli, stop } = await servedCluster();
    try {
      await t.step("backup target create and list; a relative path is refused", async () => {
        const made = oneDocument(
          await cli("backup", "target", "create", "nas", "--path", "/srv/backups", "-o", "json"),
        );
        assertEquals(made.path, "/srv/backups");
        const list = oneDocument(await cli("backup", "target", "list", "-o", "json"));
        assertEquals((list.targets as { name: string }[]).map((x) => x.name), ["nas"]);
        const bad = oneErrorLine(await cli("backup", "target", "create", "x", "--path", "rel"), 1);
        assert(bad.includes("path"), bad);
      });

      await t.step("restore needs --as or --in-place (usage, exit 2)", async () => {
        const r = await cli("backup", "restore", "bk-000000000001");
        assertEquals(r.code, 2, r.stderr);
        assert(r.stderr.includes("--as NEWVM or --in-place"), r.stderr);
      });

      await t.step("vm backup create of an unknown VM is exit 1, one line", async () => {
        const line = oneErrorLine(await cli("vm", "backup", "create", "ghost"), 1);
        assert(line.includes("ghost"), line);
      });

      await t.step("backup schedule set: a bad cron names the field", async () => {
        await c.addHost("n2");
        await c.vm({ name: "web", node: "n2" }, "running");
        const line = oneErrorLine(
          await cli("backup", "schedule", "set", "web", "--cron", "99 * * * *", "--keep-last", "3"),
          1,
        );
        assert(line.includes("cron"), line);
        const ok = oneDocument(
          await cli(
            "backup",
            "schedule",
            "set",
            "web",
            "--cron",
            "0 2 * * *",
            "--keep-last",
            "3",
            "--keep-weekly",
            "4",
            "-o",
            "json",
          ),
        );
        assertEquals([ok.vm, ok.target, ok.keepLast, ok.keepWeekly], ["web", "nas", 3, 4]);
      });
    } finally {
      await stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "CLI: events lists, filters and resumes; -o json is one document; a bad type is usage",
    ...opts,
  },
  async () => {
    const { cli, stop } = await servedCluster();
    try {
      assertEquals((await cli("vm", "create", "ev1", "--image", "img", "--no-start")).code, 0);
      assertEquals((await cli("vm", "create", "ev2", "--image", "img", "--no-start")).code, 0);
      const all = oneDocument(await cli("events", "--type", "vm", "-o", "json")) as {
        events: { id: string; action: string; resource: string }[];
      };
      assertEquals(all.events.map((e) => [e.action, e.resource]), [
        ["vm.created", "ev1"],
        ["vm.created", "ev2"],
      ]);
      const after = oneDocument(
        await cli("events", "--type", "vm", "--since", all.events[0].id, "-o", "json"),
      ) as { events: { resource: string }[] };
      assertEquals(after.events.map((e) => e.resource), ["ev2"]);
      const one = oneDocument(
        await cli("events", "--resource", "ev1", "--type", "vm", "-o", "json"),
      );
      assertEquals((one.events as unknown[]).length, 1);
      const table = await cli("events", "--type", "vm", "--tail", "1");
      assertEquals(table.code, 0, table.stderr);
      const lines = table.stdout.trimEnd().split("\n");
      assert(lines[0].startsWith("AT") && lines[0].includes("ACTION"), lines[0]);
      assertEquals(lines.length, 2, table.stdout);
      assert(lines[1].includes("vm.created") && lines[1].includes("ev2"), lines[1]);
      const bad = await cli("events", "--type", "vms");
      assertEquals(bad.code, 2, bad.stderr);
      assert(bad.stderr.includes("unknown event type vms"), bad.stderr);
    } finally {
      await stop();
    }
  },
);
