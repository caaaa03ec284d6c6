/**
 * `vm list` from a copy of each VM as JSON, kept per node and refreshed as VMs
 * change (StateMachine.onVmChange names every VM a committed command touched;
 * a snapshot install clears it all).
 *
 * Why: answering 10,000 VMs by reading, parsing and serializing every record
 * each time made about 30 MiB of short-lived objects per list; a burst of 100
 * lists grew the leader's JavaScript heap to 163 MiB reserved and its RSS to
 * 376 MiB (issue 10's goal: 300). Now a list reads the matching names from
 * SQLite's index and hands out the VMs' stored JSON strings, which the route
 * sends in pieces (api/json_body.ts says why not as one string). A VM is read
 * and serialized again only after it changed.
 *
 * @module
 */
import { redactVm } from "../core/cloudinit/mod.ts";
import { viewWithAddressChecks } from "../core/network/mod.ts";
import type { Role, StateMachine, VmQuery, VmRecord } from "../core/fsm/mod.ts";

/** One VM as the list shows it. */
interface Listed {
  labels: Record<string, string>;
  /** As admins see it. */
  full: string;
  /** As operators and viewers see it (the same string when it holds no secrets). */
  redacted: string;
}

/** A page of `vm list`: each VM's JSON, and the last name on it when more VMs follow. */
export interface VmPage {
  items: string[];
  lastName: string | null;
}

export class VmListing {
  readonly #fsm: StateMachine;
  readonly #byName = new Map<string, Listed>();
  readonly #unsubscribe: () => void;

  constructor(fsm: StateMachine) {
    this.#fsm = fsm;
    this.#unsubscribe = fsm.onVmChange((name) => {
      if (name === null) this.#byName.clear();
      else this.#byName.delete(name);
    });
  }

  /** Stops following changes (the node is closing). */
  close(): void {
    this.#unsubscribe();
    this.#byName.clear();
  }

  /**
   * The VMs matching `q` in name order, as `role` may see them, each as JSON;
   * `lastName` is set when `q.limit` VMs filled the page and another matching VM follows
   * (looked for, not serialized: the last page has no `continue`, as every list's).
   */
  page(q: VmQuery, role: Role): VmPage {
    const wanted = Object.entries(q.labels ?? {});
    const limit = q.limit ?? Infinity;
    const items: string[] = [];
    let last: string | null = null;
    for (const name of this.#fsm.vmNames(q)) {
      const vm = this.#listed(name);
      if (!vm) continue; // deleted meanwhile: not possible within one turn, but harmless
      if (!wanted.every(([k, v]) => Object.hasOwn(vm.labels, k) && vm.labels[k] === v)) continue;
      if (items.length >= limit) return { items, lastName: last };
      items.push(role === "admin" ? vm.full : vm.redacted);
      last = name;
    }
    return { items, lastName: null };
  }

  #listed(name: string): Listed | null {
    const known = this.#byName.get(name);
    if (known) return known;
    const record = this.#fsm.vm(name);
    if (!record) return null;
    const listed = listedOf(record);
    this.#byName.set(name, listed);
    return listed;
  }
}

function listedOf(stored: VmRecord): Listed {
  // As `vm show` gives it: NICs with their guest-address check.
  const record = viewWithAddressChecks(stored);
  const full = JSON.stringify(record);
  const hidden = redactVm(record, "viewer");
  return {
    labels: record.labels,
    full,
    redacted: hidden === record ? full : JSON.stringify(hidden),
  };
}
