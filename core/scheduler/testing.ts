/** Fixtures for the scheduler's tests: hosts and VMs with only what placement reads. */
import type { HostView, PlacedVm } from "./types.ts";
import type { Inventory, NodeRecord } from "../fsm/mod.ts";

export interface HostOptions {
  state?: string;
  cpus?: number;
  diskGiB?: number;
  labels?: Record<string, string>;
  inventory?: Inventory | null;
  /** null: the host's accelerator probe has not decided yet. */
  accel?: Inventory["accel"];
}

export function host(name: string, memoryMiB: number, opts: HostOptions = {}): HostView {
  const inventory: Inventory = {
    cpus: opts.cpus ?? 2,
    memoryMiB,
    diskGiB: opts.diskGiB ?? 10,
    diskFreeGiB: 5,
    accel: opts.accel === undefined ? "tcg" : opts.accel,
    arch: "x86_64",
    kernel: "k",
    hostname: name,
    version: "0",
  };
  const node: NodeRecord = {
    name,
    url: `http://${name}`,
    state: "ready",
    labels: opts.labels ?? {},
    inventory: opts.inventory === undefined ? inventory : opts.inventory,
    joinedAt: "",
    updatedAt: "",
  };
  const state = opts.state ?? "ready";
  return { node, schedulable: state === "ready", state };
}

export function vm(
  name: string,
  node: string,
  memoryMiB: number,
  extra: Partial<PlacedVm> = {},
): PlacedVm {
  return { name, node, cpus: 1, memoryMiB, desired: "running", ...extra };
}

/** `count` identical hosts named h01, h02, ... */
export function hosts(count: number, memoryMiB = 4096): HostView[] {
  return Array.from(
    { length: count },
    (_, i) => host(`h${String(i + 1).padStart(2, "0")}`, memoryMiB),
  );
}
