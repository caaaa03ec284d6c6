/** `novactl vm ...`: the VM lifecycle, as a thin client of /api/v1/vms. */
import { Command, InvalidArgumentError, Option } from "commander";
import type { ApiClient } from "./client.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  positiveInt,
  withClientOptions,
  withListLimit,
  withWaitOptions,
} from "./common.ts";
import { durationSeconds, integer, nonNegativeInt, sizeGiB, sizeMiB } from "./parse.ts";
import { RESTART_POLICY, VM_STATE } from "../core/fsm/command_schemas.ts";
import { printFields, printTable, render } from "./output.ts";
import { vmFields } from "./vm_nic_view.ts";
import { NovaError } from "../core/errors/mod.ts";
import { type Operation, waitForOperation } from "./operation.ts";
import { vmBackupCommand } from "./backup.ts";
import { nicCommand } from "./vm_nic.ts";
import { diskCommand } from "./vm_disk.ts";
import { vmStatsCommand } from "./stats.ts";
import { attachConsole } from "./console.ts";
import { snapshotCommand } from "./vm_snapshot.ts";

/** Memory and disk sizes go through the one size parser (parse.ts); these names stay for callers. */
export { sizeGiB as parseDiskGiB, sizeMiB as parseMemoryMiB };

/** Collects repeated `--label key=value` options into one object. */
export function collectLabel(
  value: string,
  previous: Record<string, string>,
): Record<string, string> {
  const m = /^([a-zA-Z0-9._/-]+)=(.*)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`"${value}" is not key=value`);
  return { ...previous, [m[1]]: m[2] };
}

function collectConstraint(
  value: string,
  previous: { key: string; op: "=" | "!="; value: string }[],
) {
  const m = /^([a-zA-Z0-9._/-]+)(!=|=)(.*)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`"${value}" is not key=value or key!=value`);
  return [...previous, { key: m[1], op: m[2] as "=" | "!=", value: m[3] }];
}

/** One `--nic` as the API's `nics` entry. */
export interface NicArg {
  network: string;
  ip?: string;
  mac?: string;
  securityGroups?: string[];
}

/** `--nic NETWORK[,ip=IP][,mac=MAC][,sg=GROUP[+GROUP...]]`, as the API's `nics` entries. */
export function collectNic(value: string, previous: NicArg[]): NicArg[] {
  const [network, ...opts] = value.split(",");
  if (!network || network.includes("=")) {
    throw new InvalidArgumentError(`"${value}" is not NETWORK[,ip=IP][,mac=MAC][,sg=GROUP]`);
  }
  const nic: NicArg = { network };
  for (const opt of opts) {
    const m = /^(ip|mac|sg)=(.+)$/.exec(opt);
    if (!m) {
      throw new InvalidArgumentError(`"${opt}" in --nic: give ip=IP, mac=MAC or sg=GROUP[+GROUP]`);
    }
    if (m[1] === "sg") {
      // Several groups: `sg=web+ssh` or `sg=web,sg=ssh`.
      nic.securityGroups = [...nic.securityGroups ?? [], ...m[2].split("+").filter(Boolean)];
    } else nic[m[1] as "ip" | "mac"] = m[2];
  }
  return [...previous, nic];
}

/** `vm wait --for`: `state=STATE` or `delete`, as the state waitFor waits for. */
export function waitCondition(text: string): string {
  if (/^delete(d)?$/.test(text)) return "gone";
  const m = /^state=(.+)$/.exec(text);
  const states: readonly string[] = VM_STATE.options;
  if (!m || !states.includes(m[1])) {
    throw new InvalidArgumentError(
      `"${text}" is not state=STATE (${VM_STATE.options.join(", ")}) or delete`,
    );
  }
  return m[1];
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** VMs per request when `vm list` walks the pages. */

const vmPath = (name: string, rest = "") => `/api/v1/vms/${encodeURIComponent(name)}${rest}`;

interface VmView {
  name: string;
  node: string | null;
  state: string;
  desired: string;
  reason: string | null;
}

/**
 * Polls until the VM reaches `want` (or fails), printing state changes on a
 * TTY. `gone` waits for the record to disappear (deletion).
 */
async function waitFor(
  client: ApiClient,
  name: string,
  want: string,
  timeoutMs: number,
): Promise<VmView | null> {
  const deadline = Date.now() + timeoutMs;
  const tty = Deno.stderr.isTerminal();
  let last = "";
  for (;;) {
    let vm: VmView | null;
    try {
      const wait = want === "gone" ? "deleted" : want;
      vm = await client.get<VmView>(vmPath(name, `/wait?state=${wait}&timeoutMs=2000`));
    } catch (err) {
      if (err instanceof NovaError && err.code === "not_found" && want === "gone") return null;
      throw err;
    }
    if (tty && vm.state !== last) console.error(`${name}: ${vm.state}`);
    last = vm.state;
    if (vm.state === want) return vm;
    if (vm.state === "failed" && want !== "failed") {
      throw new NovaError("conflict", `${name} failed: ${vm.reason ?? "unknown reason"}`);
    }
    if (Date.now() > deadline) {
      throw new NovaError("timeout", `${name} is ${vm.state}, not ${want}, after ${timeoutMs} ms`);
    }
  }
}

/** What a lifecycle call answers at cluster level 2: the VM and the operation that follows it. */
interface Tracked {
  name: string;
  operation?: Operation;
}

/**
 * Waits for a lifecycle call to be done: for its operation when the answer names one (a
 * restart ends only with a new run), else (an older cluster) for the VM to reach `want`.
 * Shows the VM's state changes on a TTY; resolves with the VM's record (or its deletion)
 * and the finished operation, as one document. A failed or superseded operation throws.
 */
async function waitForAction(
  client: ApiClient,
  answer: Tracked,
  want: string,
  timeoutMs: number,
): Promise<unknown> {
  const { name, operation } = answer;
  if (!operation?.id) {
    const vm = await waitFor(client, name, want, timeoutMs);
    return vm ?? { name, deleted: true };
  }
  const deadline = Date.now() + timeoutMs;
  const tty = Deno.stderr.isTerminal();
  let last = "";
  const vmNow = async (): Promise<VmView | null> => {
    try {
      return await client.get<VmView>(vmPath(name));
    } catch (err) {
      if (err instanceof NovaError && err.code === "not_found") return null;
      throw err;
    }
  };
  let op = operation;
  for (;;) {
    if (op.state !== "running") break;
    if (Date.now() > deadline) {
      throw new NovaError(
        "timeout",
        `${op.kind} ${name} (operation ${op.id}) still running after ${timeoutMs} ms`,
        op,
      );
    }
    op = await client.get<Operation>(`/api/v1/operations/${op.id}/wait?timeoutMs=1000`);
    if (tty) {
      const state = (await vmNow())?.state ?? "deleted";
      if (state !== last) console.error(`${name}: ${state}`);
      last = state;
    }
  }
  if (op.state !== "succeeded") {
    throw new NovaError("conflict", `${op.kind} ${name} ${op.state}: ${op.error ?? ""}`, op);
  }
  const vm = await vmNow();
  return { ...(vm ?? { name, deleted: true }), operation: op };
}

/** What a lifecycle call prints without -o: what was done, or asked for and its operation. */
function actionLine(verb: string, name: string, waited: boolean, r: unknown): string {
  if (waited) return `${verb} ${name}: done`;
  const id = (r as Tracked | null)?.operation?.id;
  return `${verb} ${name} requested${id ? ` (operation ${id})` : ""}`;
}

interface WaitOpts extends GlobalOpts {
  wait?: boolean;
  timeout: number;
}

function withWait(cmd: Command): Command {
  return withWaitOptions(cmd, {
    byDefault: false,
    timeoutSeconds: 120,
    until: "the VM reaches the requested state",
  });
}

function lifecycleAction(verb: string, path: string, want: string, query = "") {
  return async (name: string, opts: WaitOpts & { force?: boolean }) => {
    const client = clientOf(opts);
    const q = opts.force ? "?force=true" : query;
    let r = await client.request<unknown>("POST", vmPath(name, `/${path}${q}`));
    if (opts.wait) r = await waitForAction(client, r as Tracked, want, opts.timeout * 1000);
    render(opts.output, r, () => console.log(actionLine(verb, name, !!opts.wait, r)));
  };
}

interface CreateOpts extends WaitOpts {
  image?: string;
  fromTemplate?: string;
  cpus?: number;
  memory?: number;
  diskSize?: number;
  node?: string;
  ha?: boolean;
  start: boolean;
  label: Record<string, string>;
  restartPolicy?: string;
  user?: string;
  sshKey: string[];
  passwordHash?: string;
  userData?: string;
  group?: string;
  constraint: { key: string; op: "=" | "!="; value: string }[];
  strategy?: "spread" | "pack";
  haPriority?: number;
  haMaxRestarts?: number;
  haRestartWindow?: number;
  pool?: string;
  dryRun?: boolean;
  nic: NicArg[];
}

async function cloudInitOf(opts: CreateOpts) {
  if (!opts.user && !opts.sshKey.length && !opts.passwordHash && !opts.userData) return undefined;
  const read = async (f: string, what: string) => {
    try {
      return await Deno.readTextFile(f);
    } catch (err) {
      throw new NovaError("usage", `cannot read ${what} ${f}: ${(err as Error).message}`);
    }
  };
  const sshKeys: string[] = [];
  for (const f of opts.sshKey) {
    sshKeys.push(...(await read(f, "--ssh-key")).split("\n").map((l) => l.trim()).filter(Boolean));
  }
  return {
    user: opts.user,
    sshKeys: sshKeys.length ? sshKeys : undefined,
    passwordHash: opts.passwordHash,
    userData: opts.userData ? await read(opts.userData, "--user-data") : undefined,
  };
}

export function vmCommand(): Command {
  const vm = new Command("vm").description("virtual machines");

  withClientOptions(withWait(
    vm.command("create").argument("<name>").description("create (and by default start) a VM")
      .option("--image <image>", "image to boot")
      .option("--from-template <template>", "linked clone of a template")
      .option("--cpus <n>", "virtual CPUs (default 1)", positiveInt)
      .option("--memory <size>", "memory, e.g. 256M or 1.5G (default 256M)", sizeMiB)
      .option("--disk-size <size>", "root disk size, e.g. 10G", sizeGiB)
      .option("--node <node>", "place on this node")
      .option("--ha", "restart on another node if its host fails")
      .option("--no-start", "create stopped")
      .option("--label <key=value>", "label (repeatable)", collectLabel, {})
      .addOption(
        new Option("--restart-policy <policy>", "when to restart it (default never)").choices(
          RESTART_POLICY.options,
        ),
      )
      .option("--user <name>", "cloud-init: create this user")
      .option("--ssh-key <file>", "cloud-init: authorized key file (repeatable)", collect, [])
      .option("--password-hash <hash>", "cloud-init: crypt(3) password hash for --user")
      .option("--user-data <file>", "cloud-init: #cloud-config user-data file")
      .option("--group <group>", "placement group (affinity / anti-affinity)")
      .option(
        "--constraint <key=value>",
        "host label constraint, = or != (repeatable)",
        collectConstraint,
        [],
      )
      .addOption(
        new Option("--strategy <strategy>", "placement (default: the cluster's)").choices([
          "spread",
          "pack",
        ]),
      )
      .option("--ha-priority <n>", "HA restart order, higher first", integer)
      .option(
        "--ha-max-restarts <n>",
        "HA restarts allowed per --ha-restart-window",
        nonNegativeInt,
      )
      .option("--ha-restart-window <duration>", "window for --ha-max-restarts", durationSeconds)
      .option(
        "--pool <pool>",
        "storage pool of the disks: dir (host-local, default), shared (default with --ha), or any `pool list` names",
      )
      .option(
        "--nic <network[,ip=IP][,mac=MAC][,sg=GROUP[+GROUP]]>",
        "a NIC on a network (repeatable; none: one user-mode NIC)",
        collectNic,
        [],
      )
      .option("--dry-run", "print the placement decision and scores; create nothing"),
  )).action(async (name: string, opts: CreateOpts) => {
    const client = clientOf(opts);
    let r = await client.request<Record<string, unknown>>("POST", "/api/v1/vms", {
      name,
      image: opts.image,
      fromTemplate: opts.fromTemplate,
      cpus: opts.cpus,
      memoryMiB: opts.memory,
      diskGiB: opts.diskSize,
      node: opts.node,
      ha: !!opts.ha,
      start: opts.start,
      labels: opts.label,
      restartPolicy: opts.restartPolicy,
      cloudInit: await cloudInitOf(opts),
      group: opts.group,
      constraints: opts.constraint.length ? opts.constraint : undefined,
      strategy: opts.strategy,
      haPriority: opts.haPriority,
      haMaxRestarts: opts.haMaxRestarts,
      haRestartWindowMs: opts.haRestartWindow === undefined
        ? undefined
        : opts.haRestartWindow * 1000,
      pool: opts.pool,
      dryRun: opts.dryRun || undefined,
      nics: opts.nic.length ? opts.nic : undefined,
    });
    if (opts.dryRun) {
      return render(opts.output, r, () => {
        console.log(`${name} would be placed on ${r.node} (strategy ${r.strategy})`);
        const scores = r.scores as Record<string, number>;
        const rejected = r.rejected as Record<string, string>;
        printTable([
          ...Object.entries(scores).map(([node, score]) => ({ node, score, reason: "" })),
          ...Object.entries(rejected).map(([node, reason]) => ({ node, score: "-", reason })),
        ], ["node", "score", "reason"]);
      });
    }
    if (opts.wait) {
      r = await waitForAction(
        client,
        r as unknown as Tracked,
        opts.start ? "running" : "stopped",
        opts.timeout * 1000,
      ) as Record<string, unknown>;
    }
    const op = (r.operation as Operation | undefined)?.id;
    render(
      opts.output,
      r,
      () =>
        console.log(
          `VM ${name} created on ${r.node} (${r.state})${
            op && !opts.wait ? `, starting (operation ${op})` : ""
          }`,
        ),
    );
  });

  withClientOptions(withListLimit(
    vm.command("list").description("list VMs (filtered by the server; every page is fetched)")
      .option("--node <node>", "only VMs placed on this host")
      .addOption(
        new Option("--state <state>", "only VMs in this state").choices(VM_STATE.options),
      )
      .option("-l, --label <key=value>", "only VMs with this label (repeatable)", collect, []),
  )).action(async (opts: ListOpts & { node?: string; state?: string; label: string[] }) => {
    const query = new URLSearchParams();
    if (opts.node) query.set("node", opts.node);
    if (opts.state) query.set("state", opts.state);
    for (const l of opts.label) query.append("label", l);
    const r = await clientOf(opts).list("/api/v1/vms?" + query, "vms", opts.limit);
    render(
      opts.output,
      r,
      () => printTable(r.vms, ["name", "node", "state", "desired", "cpus", "memoryMiB", "image"]),
    );
  });

  withClientOptions(vm.command("show").argument("<name>").description("show one VM"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown>>(vmPath(name));
      render(opts.output, r, () => printFields(vmFields(r)));
    });

  withClientOptions(withWait(vm.command("start").argument("<name>").description("start a VM")))
    .action(lifecycleAction("start", "start", "running"));
  withClientOptions(withWait(
    vm.command("stop").argument("<name>").description("stop a VM (guest shutdown, then force)")
      .option("--force", "power off at once"),
  )).action(lifecycleAction("stop", "stop", "stopped"));
  withClientOptions(withWait(
    vm.command("restart").argument("<name>").description("stop and start a running VM"),
  )).action(lifecycleAction("restart", "restart", "running"));

  withClientOptions(withWait(
    vm.command("delete").argument("<name>").description("delete a VM and its disks")
      .option("--force", "delete even while running")
      .option("--keep-disks", "leave the VM's volumes in the storage pool"),
  )).action(async (name: string, opts: WaitOpts & { force?: boolean; keepDisks?: boolean }) => {
    const client = clientOf(opts);
    const q = new URLSearchParams();
    if (opts.force) q.set("force", "true");
    if (opts.keepDisks) q.set("keepDisks", "true");
    let r = await client.request<unknown>("DELETE", vmPath(name, q.size ? `?${q}` : ""));
    if (opts.wait) r = await waitForAction(client, r as Tracked, "gone", opts.timeout * 1000);
    render(opts.output, r, () => console.log(actionLine("delete", name, !!opts.wait, r)));
  });

  withClientOptions(
    vm.command("wait").argument("<name>")
      .description("wait until a VM is in a state (or deleted); exit 1 on failure or timeout")
      .requiredOption(
        "--for <condition>",
        "state=STATE (e.g. state=running) or delete",
        waitCondition,
      )
      .option("--timeout <duration>", "give up after, e.g. 90s, 5m", durationSeconds, 300),
  ).action(async (name: string, opts: GlobalOpts & { for: string; timeout: number }) => {
    const vm = await waitFor(clientOf(opts), name, opts.for, opts.timeout * 1000);
    const r = vm ?? { name, deleted: true };
    render(opts.output, r, () => console.log(`${name}: ${vm ? vm.state : "deleted"}`));
  });

  withClientOptions(
    vm.command("resize").argument("<name>").description(
      "change CPUs or memory of a stopped VM, or grow its root disk (also while it runs)",
    )
      .option("--cpus <n>", "virtual CPUs", positiveInt)
      .option("--memory <size>", "memory, e.g. 512M", sizeMiB)
      .option("--disk-size <size>", "grow the root disk to this size", sizeGiB),
  ).action(
    async (
      name: string,
      opts: GlobalOpts & { cpus?: number; memory?: number; diskSize?: number },
    ) => {
      const r = await clientOf(opts).request("POST", vmPath(name, "/resize"), {
        cpus: opts.cpus,
        memoryMiB: opts.memory,
        diskGiB: opts.diskSize,
      });
      render(opts.output, r, () => console.log(`resized ${name}`));
    },
  );

  withClientOptions(
    vm.command("console").argument("<name>").description("print the serial console log")
      .option("--follow", "keep printing as the guest writes")
      .option("--bytes <n>", "how much of the log's end to print", positiveInt, 65_536)
      .option("--attach", "interactive console: type into the guest (Ctrl-] detaches)"),
  ).action(async (
    name: string,
    opts: GlobalOpts & { follow?: boolean; bytes: number; attach?: boolean },
  ) => {
    if (opts.attach) return await attachConsole(clientOf(opts), vmPath(name), name);
    const q = `?bytes=${opts.bytes}${opts.follow ? "&follow=true" : ""}`;
    const res = await clientOf(opts).stream(vmPath(name, `/console${q}`));
    await res.body?.pipeTo(Deno.stdout.writable, { preventClose: true });
  });

  withClientOptions(
    vm.command("clone").argument("<source>").argument("<name>")
      .description("copy a stopped VM or a template (linked clones need a template)")
      .option("--linked", "share the source's blocks (template sources; the default for them)")
      .option("--full", "independent copy of the disks (the default for VMs)")
      .option("--start", "start the clone"),
  ).action(
    async (
      source: string,
      name: string,
      opts: GlobalOpts & { linked?: boolean; full?: boolean; start?: boolean },
    ) => {
      if (opts.linked && opts.full) {
        throw new NovaError("usage", "give --linked or --full, not both");
      }
      const mode = opts.linked ? "linked" : opts.full ? "full" : undefined;
      const r = await clientOf(opts).request<Record<string, unknown>>(
        "POST",
        vmPath(source, "/clone"),
        { name, mode, start: !!opts.start },
      );
      render(opts.output, r, () => console.log(`VM ${name} cloned from ${source} on ${r.node}`));
    },
  );

  withClientOptions(
    vm.command("template").argument("<name>").description(
      "make a stopped VM an immutable template",
    ),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("POST", vmPath(name, "/template"));
    render(opts.output, r, () => console.log(`${name} is now a template`));
  });

  withClientOptions(withWaitOptions(
    vm.command("migrate").argument("<name>")
      .description("move a VM to another host (live when running, cold when stopped)")
      .option("--to <node>", "destination (default: the scheduler's choice)")
      .option("--abort", "abort the VM's running migration"),
    { byDefault: true, timeoutSeconds: 600, until: "the migration is done" },
  )).action(
    async (
      name: string,
      opts: GlobalOpts & { to?: string; wait: boolean; abort?: boolean; timeout: number },
    ) => {
      const client = clientOf(opts);
      if (opts.abort) {
        const vmr = await client.get<{ migration?: { opId: string } | null }>(vmPath(name));
        if (!vmr.migration) throw new NovaError("conflict", `${name} is not migrating`);
        const r = await client.request("POST", `/api/v1/operations/${vmr.migration.opId}/abort`);
        return render(
          opts.output,
          r,
          () => console.log(`abort requested for ${vmr.migration!.opId}`),
        );
      }
      let op = await client.request<Operation>("POST", vmPath(name, "/migrate"), { to: opts.to });
      if (opts.wait) {
        op = await waitForOperation(client, op.id, opts.timeout);
      }
      render(opts.output, op, () => {
        if (!opts.wait) {
          return console.log(`migration ${op.id} started`);
        }
        const r = op.result ?? {};
        console.log(
          `${name} migrated ${r.from} → ${r.to} in ${r.totalMs} ms` +
            (r.live
              ? ` (downtime ${r.qemuDowntimeMs} ms, guest paused ${r.guestPausedMs} ms)`
              : " (cold)"),
        );
      });
    },
  );

  vm.addCommand(snapshotCommand());
  vm.addCommand(nicCommand());
  vm.addCommand(vmStatsCommand());
  vm.addCommand(diskCommand());
  vm.addCommand(vmBackupCommand());
  return vm;
}
