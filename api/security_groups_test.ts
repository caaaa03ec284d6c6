/** `/api/v1/security-groups` and `sg=` on NICs: the replicated groups, rules and members. */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout({ name: "API: security groups, rules and NIC membership", ...opts }, async (t) => {
  const { c, call, tokens } = await startTestApp();
  const token = tokens.operator;
  const base = "/api/v1/security-groups";
  type Rule = { id: string; direction: string; protocol: string; portMin: number | null };
  type Group = { name: string; rules: Rule[]; ports: { vm: string; nic: number; ip: string }[] };
  const show = async (name: string) =>
    (await call("GET", `${base}/${name}`, { token })).body as Group;
  /** Everything a refused request must leave as it was. */
  const snapshot = async () =>
    JSON.stringify([
      (await call("GET", base, { token })).body,
      ...await Promise.all(["web", "db"].map(show)),
    ]);
  const addRule = (group: string, body: unknown) =>
    call("POST", `${base}/${group}/rules`, { token, body });
  const createVm = (name: string, nics: unknown) =>
    call("POST", "/api/v1/vms", {
      token,
      body: { name, image: "img", start: false, memoryMiB: 64, nics },
    });
  try {
    await t.step("groups and rules are made; a rule answers its id", async () => {
      assertEquals(
        (await call("POST", "/api/v1/networks", {
          token,
          body: { name: "blue", type: "overlay", subnet: "10.60.0.0/24" },
        })).status,
        201,
      );
      for (const name of ["web", "db"]) {
        const r = await call("POST", base, { token, body: { name, description: `${name} tier` } });
        assertEquals(r.status, 201, JSON.stringify(r.body));
      }
      const icmp = await addRule("web", { direction: "ingress", protocol: "icmp" });
      assertEquals(icmp.status, 201, JSON.stringify(icmp.body));
      assert(/^r\d+$/.test(icmp.body.id), icmp.body.id);
      const tcp = await addRule("web", {
        direction: "ingress",
        protocol: "tcp",
        port: "8000-8080",
        remote: "10.60.0.0/24",
      });
      assertEquals(tcp.status, 201, JSON.stringify(tcp.body));
      assertEquals([tcp.body.portMin, tcp.body.portMax, tcp.body.remoteCidr], [
        8000,
        8080,
        "10.60.0.0/24",
      ]);
      const fromWeb = await addRule("db", {
        direction: "ingress",
        protocol: "tcp",
        port: 5432,
        remoteGroup: "web",
      });
      assertEquals(fromWeb.status, 201, JSON.stringify(fromWeb.body));
      assertEquals((await show("web")).rules.map((r) => r.id), [icmp.body.id, tcp.body.id]);
    });

    await t.step("a NIC joins groups at VM create", async () => {
      const r = await createVm("a", [{ network: "blue", securityGroups: ["web", "db"] }]);
      assertEquals(r.status, 201, JSON.stringify(r.body));
      const vm = (await call("GET", "/api/v1/vms/a", { token })).body;
      assertEquals(vm.nics[0].securityGroups, ["web", "db"]);
      assertEquals((await show("web")).ports.map((p) => [p.vm, p.nic]), [["a", 0]]);
      const list = (await call("GET", base, { token: tokens.viewer })).body.securityGroups;
      assertEquals(
        list.map((g: { name: string; rules: number; ports: number }) => [g.name, g.rules, g.ports]),
        [["db", 1, 1], ["web", 2, 1]],
      );
    });

    await t.step("bad input is refused naming the field, and nothing changes", async () => {
      const before = await snapshot();
      const cases: [string, () => ReturnType<typeof call>, number, string[]][] = [
        [
          "icmp with a port",
          () => addRule("web", { direction: "ingress", protocol: "icmp", port: 80 }),
          400,
          ["port"],
        ],
        [
          "any with a port",
          () => addRule("web", { direction: "ingress", protocol: "any", port: "1-2" }),
          400,
          ["port"],
        ],
        [
          "a range ending before it starts",
          () => addRule("web", { direction: "ingress", protocol: "tcp", port: "90-80" }),
          400,
          ["port"],
        ],
        ["port 0", () => addRule("web", { direction: "ingress", protocol: "tcp", port: 0 }), 400, [
          "port",
        ]],
        [
          "port 70000",
          () => addRule("web", { direction: "ingress", protocol: "udp", port: "70000" }),
          400,
          ["port"],
        ],
        [
          "a port that is no number",
          () => addRule("web", { direction: "ingress", protocol: "tcp", port: "http" }),
          400,
          ["port"],
        ],
        [
          "a bad CIDR",
          () => addRule("web", { direction: "ingress", protocol: "tcp", remote: "10.0.0.300/8" }),
          400,
          ["remote"],
        ],
        [
          "a CIDR with host bits",
          () => addRule("web", { direction: "ingress", protocol: "tcp", remote: "10.0.0.1/8" }),
          400,
          ["remote"],
        ],
        [
          "a prefix over 32",
          () => addRule("web", { direction: "ingress", protocol: "tcp", remote: "10.0.0.0/33" }),
          400,
          ["remote"],
        ],
        [
          "both remotes",
          () =>
            addRule("web", {
              direction: "ingress",
              protocol: "tcp",
              remote: "10.0.0.0/8",
              remoteGroup: "db",
            }),
          400,
          ["remote"],
        ],
        [
          "an unknown remote group",
          () => addRule("web", { direction: "ingress", protocol: "tcp", remoteGroup: "nope" }),
          400,
          ["remoteGroup"],
        ],
        ["a bad direction", () => addRule("web", { direction: "inbound", protocol: "tcp" }), 400, [
          "direction",
        ]],
        ["a bad protocol", () => addRule("web", { direction: "ingress", protocol: "sctp" }), 400, [
          "protocol",
        ]],
        [
          "a rule in an unknown group",
          () => addRule("nope", { direction: "ingress", protocol: "tcp" }),
          404,
          [],
        ],
        [
          "a duplicate rule",
          () => addRule("web", { direction: "ingress", protocol: "icmp" }),
          409,
          [],
        ],
        ["a duplicate group", () => call("POST", base, { token, body: { name: "web" } }), 409, []],
        ["a bad group name", () => call("POST", base, { token, body: { name: "Web_1" } }), 400, [
          "name",
        ]],
        [
          "an unknown group on a NIC",
          () => createVm("b", [{ network: "blue", securityGroups: ["web", "nope"] }]),
          400,
          ["nics[0].securityGroups"],
        ],
        ["a group in use by a NIC", () => call("DELETE", `${base}/db`, { token }), 409, []],
        [
          "removing an unknown rule",
          () => call("DELETE", `${base}/web/rules/r999`, { token }),
          404,
          [],
        ],
        [
          "a viewer adding a rule",
          () =>
            call("POST", `${base}/web/rules`, {
              token: tokens.viewer,
              body: { direction: "ingress", protocol: "icmp" },
            }),
          403,
          [],
        ],
      ];
      for (const [what, run, status, fields] of cases) {
        const r = await run();
        assertEquals(
          [r.status, fieldsOf(r)],
          [status, fields],
          `${what}: ${JSON.stringify(r.body)}`,
        );
        assert(r.body.error.message.length > 0, what);
      }
      assertEquals(await snapshot(), before, "a refused request changed something");
      assertEquals(c.node.fsm.vm("b"), null);
    });

    await t.step("the applier checks too: a rule naming a group deleted meanwhile", async () => {
      // Past the API's early check, as when two requests race: the log decides.
      await call("POST", base, { token, body: { name: "gone" } });
      await call("DELETE", `${base}/gone`, { token });
      const r = await c.node.propose({
        op: "sg.rule.add",
        group: "db",
        rule: {
          direction: "ingress",
          protocol: "any",
          portMin: null,
          portMax: null,
          remoteCidr: null,
          remoteGroup: "gone",
        },
        by: "t",
        at: Date.now(),
      }).then(() => null, (err) => err);
      assertEquals(r?.code, "validation");
    });

    await t.step("a rule removed; a group free of NICs and references is deleted", async () => {
      const rule = (await show("web")).rules[0].id;
      assertEquals((await call("DELETE", `${base}/web/rules/${rule}`, { token })).status, 200);
      assertEquals((await show("web")).rules.length, 1);
      assertEquals(
        (await call("DELETE", `/api/v1/vms/a?force=true`, { token })).status < 300,
        true,
      );
      await c.node.propose({
        op: "vm.remove",
        name: "a",
        node: c.node.fsm.vm("a")!.node!,
        at: Date.now(),
      });
      assertEquals(c.node.fsm.securityGroups.members(null), [], "the NIC left its groups");
      // Still the remote of db's rule.
      const referenced = await call("DELETE", `${base}/web`, { token });
      assertEquals(referenced.status, 409);
      assert(/db/.test(referenced.body.error.message), referenced.body.error.message);
      assertEquals((await call("DELETE", `${base}/db`, { token })).status, 200);
      assertEquals((await call("DELETE", `${base}/web`, { token })).status, 200);
      assertEquals((await call("GET", base, { token })).body.securityGroups, []);
    });
  } finally {
    await c.stop();
  }
});
