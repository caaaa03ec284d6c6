import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { testNetwork as network } from "./testing.ts";
import { OvnCentral } from "./ovn.ts";
import { applyNorthbound, desiredNorthbound, type NicPort, readNorthbound } from "./northbound.ts";

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
