/**
 * A node's networking as `node list` and `node show` print it: the datapath
 * type and tunnel address the host reports (`inventory.network`), and its
 * provider bridge mappings, the replicated ones (`bridgeMappings`) with a
 * note while the host has not applied them yet.
 *
 * @module
 */

/** `physnet1:br-ex,physnet2:br-vlan`, or "-" for none. */
export function mappingsText(m: Record<string, string> | undefined | null): string {
  const entries = Object.entries(m ?? {}).sort(([a], [b]) => a.localeCompare(b));
  return entries.length ? entries.map(([p, b]) => `${p}:${b}`).join(",") : "-";
}

/** The node view's networking fields for a table: `datapath`, `tunnelIp`, `bridgeMappings`. */
export function networkFields(node: Record<string, unknown>): {
  datapath: string;
  tunnelIp: string;
  bridgeMappings: string;
} {
  const inventory = (node.inventory ?? {}) as Record<string, unknown>;
  const network = inventory.network as
    | { datapath?: string; tunnelIp?: string; bridgeMappings?: Record<string, string> }
    | undefined;
  if (!network) {
    return { datapath: "off", tunnelIp: "-", bridgeMappings: mappingsText(null) };
  }
  const wanted = mappingsText(node.bridgeMappings as Record<string, string> | undefined);
  // Older hosts do not report what they applied: nothing to compare with.
  const applied = network.bridgeMappings ? mappingsText(network.bridgeMappings) : wanted;
  return {
    datapath: network.datapath ?? "-",
    tunnelIp: network.tunnelIp ?? "-",
    bridgeMappings: applied === wanted ? wanted : `${wanted} (host has ${applied})`,
  };
}
