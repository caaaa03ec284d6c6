/**
 * A host's provider bridges: the OVS bridge each provider network (physnet)
 * of a vlan or flat network leaves the host through. The host's mappings
 * live in replicated state (core/fsm/bridge_mappings.ts); each supervision
 * pass makes the host's OVS agree: every mapped bridge exists (of the host's
 * datapath type), and `external_ids:ovn-bridge-mappings` names them, which is
 * what ovn-controller reads to patch localnet ports (and a router's gateway
 * port) through to that bridge.
 *
 * What goes on a bridge beside the patch ports (the physical NIC, a bond, a
 * veth in tests) is the operator's: a bridge no longer mapped is left in
 * place with its ports, and ovn-controller takes its own patch ports away.
 *
 * @module
 */
import { log } from "../../core/log/mod.ts";
import type { OvsHost } from "./ovs_host.ts";

/** `physnet1:br-ex,physnet2:br-vlan`, as ovn-controller reads it. */
export function bridgeMappingsValue(mappings: Record<string, string>): string {
  return Object.entries(mappings).sort(([a], [b]) => a.localeCompare(b))
    .map(([physnet, bridge]) => `${physnet}:${bridge}`).join(",");
}

export class ProviderBridges {
  /** What was last written (the mappings' value); "" before the first write. */
  #applied: string | null = null;

  constructor(readonly ovs: OvsHost) {}

  /** Forgets what was written, so the next {@link ensure} writes again (OVS restarted). */
  reset(): void {
    this.#applied = null;
  }

  /** The mappings in effect on this host, as last written (none before the first write). */
  applied(): Record<string, string> {
    return Object.fromEntries(
      (this.#applied ?? "").split(",").filter(Boolean).map((m) => m.split(":", 2)),
    );
  }

  /** Makes the bridges and the mappings setting equal `mappings`; true when it wrote. */
  async ensure(mappings: Record<string, string>): Promise<boolean> {
    const value = bridgeMappingsValue(mappings);
    if (value === this.#applied) return false;
    for (const bridge of new Set(Object.values(mappings))) await this.ovs.ensureBridge(bridge);
    await this.ovs.vsctl(
      value
        ? ["set", "open_vswitch", ".", `external_ids:ovn-bridge-mappings="${value}"`]
        : ["remove", "open_vswitch", ".", "external_ids", "ovn-bridge-mappings"],
    );
    if (this.#applied !== null || value) log.info("provider bridge mappings set", { value });
    this.#applied = value;
    return true;
  }
}
