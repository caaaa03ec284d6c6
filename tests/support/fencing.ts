/**
 * What tests read from the HA lease instead of sleeping a fixed time: how long a host's
 * watchdog still lets its HA VMs run, and the window a fault needs to show once a host is back.
 */
import { bootTimeMs, FENCE_MARGIN_MS } from "../../core/cluster/lease.ts";
import { WatchdogClient } from "../../host/fencing/mod.ts";
import { api } from "./api.ts";

/** How long the watchdog of the node in `dataDir` lets HA VMs run from now (≤ 0: fenced), or null. */
export async function fenceInMs(dataDir: string): Promise<number | null> {
  const hello = await WatchdogClient.probe(dataDir);
  return hello === null ? null : hello.fenceAt - bootTimeMs();
}

/** True once the host holds a lease with more than the fencing margin left (it may run HA VMs). */
export async function holdsLease(dataDir: string): Promise<boolean> {
  return ((await fenceInMs(dataDir)) ?? 0) > FENCE_MARGIN_MS;
}

/**
 * The window in which a wrongly (re)started copy of an HA VM would show once a host is back:
 * one `ha.leaseMs` (a host acts on the cluster's state at least once per lease) plus the
 * fencing margin, read from the live configuration.
 */
export async function haQuietWindowMs(url: string, token: string): Promise<number> {
  const r = await api<{ value: number }>(`${url}/api/v1/config/ha.leaseMs`, { token });
  const leaseMs = Number(r.body.value);
  if (!(leaseMs > 0)) throw new Error(`ha.leaseMs unreadable: ${JSON.stringify(r.body)}`);
  return leaseMs + FENCE_MARGIN_MS;
}
