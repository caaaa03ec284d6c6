import { assertEquals } from "../core/testing/assert.ts";
import { networkFields } from "./node_network.ts";

Deno.test("node show/list: datapath, tunnel IP and bridge mappings from the node view", () => {
  const view = (applied?: Record<string, string>) => ({
    name: "n2",
    bridgeMappings: { physnet2: "br-vlan", physnet1: "br-ex" },
    inventory: {
      network: { datapath: "netdev", tunnelIp: "10.0.0.2", bridgeMappings: applied },
    },
  });
  assertEquals(networkFields(view({ physnet1: "br-ex", physnet2: "br-vlan" })), {
    datapath: "netdev",
    tunnelIp: "10.0.0.2",
    bridgeMappings: "physnet1:br-ex,physnet2:br-vlan",
  });
  // Set but not applied by the host yet.
  assertEquals(
    networkFields(view({})).bridgeMappings,
    "physnet1:br-ex,physnet2:br-vlan (host has -)",
  );
  assertEquals(networkFields({ name: "n3", bridgeMappings: {}, inventory: {} }), {
    datapath: "off",
    tunnelIp: "-",
    bridgeMappings: "-",
  });
});
