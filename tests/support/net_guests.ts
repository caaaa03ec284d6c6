/**
 * Networked test guests for the failure tests: a VM with one NIC whose guest
 * pings a peer every second and prints each reply on its console
 * (`NV-PING-64 bytes from PEER: ... time=T ms`), and waits on what it shows.
 */
import type { NetCluster } from "../../bench/lib/net_cluster.ts";
import { eventually } from "./api.ts";

export interface NetVm {
  name: string;
  node: string;
  state: string;
  nics: { network: string; ip: string; mac: string }[];
  guest?: { interfaces?: { mac: string; addresses: string[] }[] };
}

/** RTTs of the ping replies from `peer` the guest printed. */
export function pings(consoleText: string, peer: string): number[] {
  const re = new RegExp(
    `NV-PING-64 bytes from ${peer.replace(/\./g, "\\.")}:.*time=([\\d.]+)`,
    "g",
  );
  return [...consoleText.matchAll(re)].map((m) => Number(m[1]));
}

export async function showVm(net: NetCluster, name: string): Promise<NetVm> {
  const r = await net.api<NetVm>(`/api/v1/vms/${name}`);
  if (r.status !== 200) throw new Error(`vm show ${name}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/**
 * `vm create NAME --nic NIC --node NODE --wait` with the test guest; when `peer` is given, the
 * guest pings it every second. `extra` are more `vm create` flags (`--ha`).
 */
export async function createPinger(
  net: NetCluster,
  g: { name: string; node: string; nic: string; peer?: string; extra?: string[] },
): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const args = ["vm", "create", g.name, "--image", "guest", "--memory", "128M"];
    args.push("--node", g.node, "--nic", g.nic, ...(g.extra ?? []), "--wait");
    if (g.peer) {
      const ud = `${dir}/${g.name}.yaml`;
      await Deno.writeTextFile(
        ud,
        "#cloud-config\nruncmd:\n" +
          // Short: the seed's YAML folds long lines, which the test guest's parser cannot join.
          `  - "while :;do ping -c1 -W1 ${g.peer}|sed s/^/NV-PING-/;sleep 1;done &"\n`,
      );
      args.push("--user-data", ud);
    }
    await net.ok(...args);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Waits until the guest agent reports `ip` on the VM's NIC (its DHCP lease); the VM. */
export function leased(net: NetCluster, name: string, ip: string, timeoutMs = 120_000) {
  return eventually(`${name}'s agent reports ${ip}`, async () => {
    const v = await showVm(net, name);
    const eth = v.guest?.interfaces?.find((i) => i.mac === v.nics[0]?.mac);
    return eth?.addresses.some((a) => a.startsWith(`${ip}/`)) ? v : undefined;
  }, timeoutMs);
}

/** Waits until `name`'s console shows `count` more replies from `peer` than `after`; all RTTs. */
export function pingsFrom(
  net: NetCluster,
  name: string,
  peer: string,
  opts: { after?: number; count?: number; timeoutMs?: number } = {},
): Promise<number[]> {
  const want = (opts.after ?? 0) + (opts.count ?? 3);
  return eventually(`${name} pings ${peer} (${want} replies)`, async () => {
    const p = pings(await net.consoleOf(name), peer);
    return p.length >= want ? p : undefined;
  }, opts.timeoutMs ?? 60_000);
}
