import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { testNetwork as network } from "./testing.ts";
import { OvnCentral } from "./ovn.ts";
import {
  applyNorthbound,
  DEFAULT_PG,
  desiredNorthbound,
  desiredPortGroups,
  EGRESS_PG,
  type NicPort,
  readNorthbound,
  type SecurityGroupState,
} from "./northbound.ts";

testWithTimeout({
  name:
    "OVN northbound: derived from the networks and NICs, idempotent, drift repaired, others' rows kept",
  timeoutMs: 2 * MINUTE,
}, async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "novactl-nb-" });
  const central = new OvnCentral(dataDir);
  const nbctl = (args: string[]) => central.nbctl(args);
  const blue = network("blue", { dns: ["10.10.0.53", "9.9.9.9"] });
  const v100 = network("v100", {
    type: "vlan",
    subnet: "192.168.100.0/24",
    gateway: "192.168.100.1",
    vlan: 100,
    physnet: "physnet1",
    mtu: 1500,
  });
  const nics: NicPort[] = [
    { vm: "a", nic: 0, network: "blue", ip: "10.10.0.2", mac: "02:6e:76:00:00:00" },
    { vm: "b", nic: 0, network: "blue", ip: "10.10.0.3", mac: "02:6e:76:00:00:01" },
    { vm: "b", nic: 1, network: "v100", ip: "192.168.100.2", mac: "02:6e:76:00:00:02" },
  ];
  try {
    await central.ensureRunning();

    await t.step("first pass: switches, ports with addresses and port security, DHCP", async () => {
      const changes = await applyNorthbound(nbctl, desiredNorthbound([blue, v100], nics));
      assertEquals(changes.created.sort(), [
        "dhcp:blue",
        "dhcp:v100",
        "nv-a-0",
        "nv-b-0",
        "nv-b-1",
        "nv-blue",
        "nv-v100",
        "nv-v100-localnet",
      ]);
      assertEquals(
        (await nbctl(["lsp-get-addresses", "nv-a-0"])).trim(),
        "02:6e:76:00:00:00 10.10.0.2",
      );
      assertEquals(
        (await nbctl(["lsp-get-port-security", "nv-a-0"])).trim(),
        "02:6e:76:00:00:00 10.10.0.2",
      );
      const dhcp = (await nbctl(["lsp-get-dhcpv4-options", "nv-b-0"])).trim();
      assert(dhcp.includes("10.10.0.0/24"), dhcp);
      const uuid = dhcp.split(" ")[0];
      const options = await nbctl(["dhcp-options-get-options", uuid]);
      for (
        const line of ["router=10.10.0.1", "server_id=10.10.0.1", "mtu=1442", "lease_time=3600"]
      ) {
        assert(options.split("\n").includes(line), `${line} in ${options}`);
      }
      assert(/dns_server=\{10\.10\.0\.53, 9\.9\.9\.9\}/.test(options), options);
      assertEquals((await nbctl(["lsp-get-type", "nv-v100-localnet"])).trim(), "localnet");
      assertEquals((await nbctl(["lsp-get-tag", "nv-v100-localnet"])).trim(), "100");
    });

    await t.step("a second pass with nothing changed changes nothing", async () => {
      const changes = await applyNorthbound(nbctl, desiredNorthbound([blue, v100], nics));
      assertEquals(changes, { created: [], updated: [], deleted: [] });
    });

    await t.step("drift is repaired; a switch novactl did not make is left alone", async () => {
      await nbctl(["lsp-del", "nv-a-0"]);
      await nbctl(["lsp-set-addresses", "nv-b-0", "02:00:00:00:00:99 10.10.0.99"]);
      await nbctl(["ls-add", "someone-elses"]);
      const changes = await applyNorthbound(nbctl, desiredNorthbound([blue, v100], nics));
      assertEquals(changes.created, ["nv-a-0"]);
      assertEquals(changes.updated, ["nv-b-0"]);
      assertEquals(
        (await nbctl(["lsp-get-addresses", "nv-b-0"])).trim(),
        "02:6e:76:00:00:01 10.10.0.3",
      );
      assert((await nbctl(["ls-list"])).includes("someone-elses"));
    });

    await t.step("a NIC gone and a network gone are deleted, with their DHCP options", async () => {
      const changes = await applyNorthbound(nbctl, desiredNorthbound([blue], nics.slice(0, 1)));
      assertEquals(changes.deleted.sort(), ["dhcp:v100", "nv-b-0", "nv-v100"]);
      const actual = await readNorthbound(nbctl);
      assertEquals([...actual.switches.keys()], ["nv-blue"]);
      assertEquals([...actual.ports.keys()], ["nv-a-0"]);
      assertEquals([...actual.dhcp.keys()], ["blue"]);
    });
  } finally {
    await central.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});

const SG_NICS: NicPort[] = [
  { vm: "a", nic: 0, network: "blue", ip: "10.10.0.2", mac: "02:6e:76:00:00:00" },
  { vm: "b", nic: 0, network: "blue", ip: "10.10.0.3", mac: "02:6e:76:00:00:01" },
];
const rule = (
  over: Partial<SecurityGroupState["rules"][number]>,
): SecurityGroupState["rules"][number] => ({
  direction: "ingress",
  protocol: "any",
  portMin: null,
  portMax: null,
  remoteCidr: null,
  remoteGroup: null,
  ...over,
});
const GROUPS: SecurityGroupState[] = [
  {
    name: "web-1",
    rules: [
      rule({ protocol: "icmp" }),
      rule({ protocol: "tcp", portMin: 80, portMax: 80, remoteCidr: "10.0.0.0/8" }),
      rule({ protocol: "udp", portMin: 5000, portMax: 5010, remoteGroup: "db" }),
    ],
    members: [{ vm: "a", nic: 0 }, { vm: "gone", nic: 0 }],
  },
  {
    name: "db",
    rules: [rule({ direction: "egress", protocol: "tcp", portMin: 53, portMax: 53 })],
    members: [{ vm: "b", nic: 0 }],
  },
];

Deno.test("security groups as port groups: names, matches, the defaults", () => {
  const pgs = desiredPortGroups(GROUPS, SG_NICS);
  const web = pgs.find((g) => g.group === "web-1")!;
  assertEquals(web.name, "pg_nv_sg_web_1");
  // A member without a port (its VM gone from the networks) is not in the group.
  assertEquals(web.ports, ["nv-a-0"]);
  assertEquals(web.acls.map((a) => [a.direction, a.priority, a.action, a.match]), [
    ["to-lport", 1002, "allow-related", "outport == @pg_nv_sg_web_1 && ip4 && icmp4"],
    [
      "to-lport",
      1002,
      "allow-related",
      "outport == @pg_nv_sg_web_1 && ip4 && ip4.src == 10.0.0.0/8 && tcp && tcp.dst == 80",
    ],
    [
      "to-lport",
      1002,
      "allow-related",
      "outport == @pg_nv_sg_web_1 && ip4 && ip4.src == $pg_nv_sg_db_ip4 && udp && " +
      "udp.dst >= 5000 && udp.dst <= 5010",
    ],
  ]);
  const db = pgs.find((g) => g.group === "db")!;
  assertEquals(db.acls.map((a) => [a.direction, a.match]), [
    ["from-lport", "inport == @pg_nv_sg_db && ip4 && tcp && tcp.dst == 53"],
  ]);
  const byName = new Map(pgs.map((g) => [g.name, g]));
  assertEquals(byName.get(DEFAULT_PG)!.ports, ["nv-a-0", "nv-b-0"]);
  assertEquals(byName.get(DEFAULT_PG)!.acls.map((a) => [a.direction, a.action, a.match]), [
    ["to-lport", "drop", "outport == @pg_nv_default && ip"],
  ]);
  // Only db has egress rules: only its NIC has egress limited (DHCP still allowed).
  assertEquals(byName.get(EGRESS_PG)!.ports, ["nv-b-0"]);
  assertEquals(byName.get(EGRESS_PG)!.acls.map((a) => a.action).sort(), ["allow-related", "drop"]);
  assertEquals(desiredPortGroups([], SG_NICS), [], "no groups, no port groups at all");
});

testWithTimeout({
  name:
    "OVN northbound: port groups and ACLs applied, idempotent, drift repaired, one rule at a time",
  timeoutMs: 2 * MINUTE,
}, async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "novactl-nb-sg-" });
  const central = new OvnCentral(dataDir);
  const nbctl = (args: string[]) => central.nbctl(args);
  const blue = network("blue");
  const apply = (groups: SecurityGroupState[]) =>
    applyNorthbound(nbctl, desiredNorthbound([blue], SG_NICS), desiredPortGroups(groups, SG_NICS));
  const aclUuids = async () =>
    new Map(
      [...(await readNorthbound(nbctl)).portGroups.values()].flatMap((g) =>
        g.acls.map((a) => [a.match, a.uuid] as const)
      ),
    );
  try {
    await central.ensureRunning();

    await t.step(
      "the first pass makes the ports, the port groups and their ACLs together",
      async () => {
        const changes = await apply(GROUPS);
        for (const pg of ["pg_nv_sg_web_1", "pg_nv_sg_db", DEFAULT_PG, EGRESS_PG]) {
          assert(changes.created.includes(`pg:${pg}`), `${pg} in ${changes.created}`);
        }
        const actual = await readNorthbound(nbctl);
        assertEquals(actual.portGroups.get("pg_nv_sg_web_1")!.ports, ["nv-a-0"]);
        assertEquals(actual.portGroups.get("pg_nv_sg_web_1")!.acls.length, 3);
        assertEquals(actual.portGroups.get(DEFAULT_PG)!.ports, ["nv-a-0", "nv-b-0"]);
        // OVN itself checks the matches: northd refuses none of them.
        const acls = await nbctl(["--type=port-group", "acl-list", "pg_nv_sg_web_1"]);
        assert(acls.includes("$pg_nv_sg_db_ip4"), acls);
      },
    );

    await t.step("a second pass changes nothing", async () => {
      assertEquals(await apply(GROUPS), { created: [], updated: [], deleted: [] });
    });

    await t.step("a rule added and one removed touch only their own ACLs", async () => {
      const before = await aclUuids();
      const changed: SecurityGroupState[] = [
        {
          ...GROUPS[0],
          rules: [...GROUPS[0].rules.slice(1), rule({ protocol: "tcp", portMin: 22, portMax: 22 })],
        },
        GROUPS[1],
      ];
      const changes = await apply(changed);
      assertEquals(changes.created, [
        "acl:pg_nv_sg_web_1:outport == @pg_nv_sg_web_1 && ip4 && tcp && tcp.dst == 22",
      ]);
      assertEquals(changes.deleted, [
        "acl:pg_nv_sg_web_1:outport == @pg_nv_sg_web_1 && ip4 && icmp4",
      ]);
      const after = await aclUuids();
      for (const [match, uuid] of after) {
        if (before.has(match)) assertEquals(uuid, before.get(match), `${match} kept its row`);
      }
      await apply(GROUPS);
    });

    await t.step(
      "drift is repaired: a lost ACL, a stray ACL, a member removed by hand",
      async () => {
        const web = (await readNorthbound(nbctl)).portGroups.get("pg_nv_sg_web_1")!;
        await nbctl(["remove", "Port_Group", web.uuid, "acls", web.acls[0].uuid]);
        await nbctl([
          "--type=port-group",
          "acl-add",
          "pg_nv_sg_web_1",
          "to-lport",
          "1002",
          "outport == @pg_nv_sg_web_1 && ip4",
          "allow-related",
        ]);
        await nbctl(["pg-set-ports", DEFAULT_PG, "nv-a-0"]);
        await nbctl(["pg-add", "someone_elses"]);
        const changes = await apply(GROUPS);
        assertEquals(changes.updated, [`pg:${DEFAULT_PG}`]);
        assertEquals(changes.created.length, 1);
        assertEquals(changes.deleted, ["acl:pg_nv_sg_web_1:outport == @pg_nv_sg_web_1 && ip4"]);
        assertEquals(await apply(GROUPS), { created: [], updated: [], deleted: [] });
        assert((await nbctl(["--columns=name", "list", "Port_Group"])).includes("someone_elses"));
      },
    );

    await t.step(
      "a group deleted goes with its ACLs; no groups left, no port groups left",
      async () => {
        const changes = await apply([GROUPS[1]]);
        assertEquals(changes.deleted, ["pg:pg_nv_sg_web_1"]);
        await apply([]);
        const actual = await readNorthbound(nbctl);
        assertEquals([...actual.portGroups.keys()], []);
        // Only someone_elses's rows are left: no ACL of novactl's outlived its group.
        assertEquals((await nbctl(["--bare", "--columns=_uuid", "list", "ACL"])).trim(), "");
      },
    );
  } finally {
    await central.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
