/**
 * Backups on the leader: targets, and the operations that back up, verify
 * and restore. Each operation is recorded with the host that runs it (the
 * VM's host for a backup or restore, the leader for a verify); that host's
 * backup runner (host/backup/) sees it in the replicated state and runs it.
 * A restore as a new VM first creates that VM here (stopped, placed by the
 * scheduler, its disks marked as coming from the backup); a restore that
 * fails removes it again.
 */
import { createOperation } from "./operation_service.ts";
import type { ClusterNode } from "./node.ts";
import type { BackupRecord, OperationRecord, VmDisk, VmRecord, VmSpec } from "../fsm/mod.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { isAtRest, plannerOf, serializedDecision } from "./vm_service.ts";

const GiB = 2 ** 30;

/** `vm backup create`. */
export interface BackupRequest {
  vm: string;
  target?: string;
  incremental?: boolean;
}

/** `backup restore`: into a new VM (`as`) or the stopped VM itself (`inPlace`). */
export interface RestoreRequest {
  as?: string;
  inPlace?: boolean;
  node?: string;
  start?: boolean;
}

/** What a restore as a new VM needs from the backup's manifest (read by the caller). */
export interface RestoreSource {
  spec: { image: string; cpus: number; memoryMiB: number };
  disks: { id: string; virtualBytes: number }[];
}

function newId(prefix: string, hexDigits: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(Math.ceil(hexDigits / 2)));
  return prefix +
    [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, hexDigits);
}

/** A backup, restore or verify already running on `target` (a VM or a backup id). */
function busy(node: ClusterNode, target: string): OperationRecord | undefined {
  return node.fsm.runningOperations().find((o) =>
    o.state === "running" && o.target === target &&
    (o.kind === "backup" || o.kind === "restore" || o.kind === "migrate")
  );
}

/** Backup `id`. @throws NotFoundError when there is none. */
export function mustGetBackup(node: ClusterNode, id: string): BackupRecord {
  const b = node.fsm.backups.get(id);
  if (!b) throw new NotFoundError("backup", id);
  return b;
}

/** The target a backup of `vm` goes to: the one asked for, else its last backup's, else the only one. */
function targetFor(node: ClusterNode, vm: string, asked?: string): string {
  if (asked) {
    if (!node.fsm.backups.target(asked)) {
      throw ValidationError.field("target", `no backup target "${asked}"`);
    }
    return asked;
  }
  const last = node.fsm.backups.list(vm).pop();
  if (last && node.fsm.backups.target(last.target)) return last.target;
  const all = node.fsm.backups.targets();
  if (all.length === 1) return all[0].name;
  throw ValidationError.field(
    "target",
    all.length ? `required: ${all.length} backup targets exist` : "no backup target exists yet",
  );
}

/** Records a backup operation of `req.vm`, run by its host. */
export function startBackup(
  node: ClusterNode,
  req: BackupRequest,
  by: string,
): Promise<OperationRecord> {
  return serializedDecision(node, async () => {
    await node.linearizableRead();
    const vm = node.fsm.vm(req.vm);
    if (!vm) throw new NotFoundError("vm", req.vm);
    if (!vm.node) throw new ConflictError(`VM "${vm.name}" is placed nowhere yet`);
    if (vm.desired === "deleted") throw new ConflictError(`VM "${vm.name}" is being deleted`);
    if (vm.template) {
      // Its volumes back linked clones that may run: a bitmap cannot be written into them.
      throw new ConflictError(`"${vm.name}" is a template; back up a VM cloned from it`);
    }
    if (vm.migration) throw new ConflictError(`VM "${vm.name}" is migrating; back it up after`);
    const running = vm.desired === "running" && vm.state === "running";
    if (!running && !isAtRest(vm)) {
      throw new ConflictError(`VM "${vm.name}" is ${vm.state}; back it up running or stopped`);
    }
    const other = busy(node, vm.name);
    if (other) {
      throw new ConflictError(
        `VM "${vm.name}" has a ${other.kind} running (operation ${other.id})`,
      );
    }
    const target = targetFor(node, vm.name, req.target);
    const id = newId("bk-", 12);
    return await createOperation(node, {
      id: newId("bkop-", 8),
      kind: "backup",
      target: vm.name,
      runner: vm.node,
      params: { backup: id, vm: vm.name, target, incremental: req.incremental === true },
      by,
    });
  });
}

/** Records a verify of backup `id`, run by this node (the leader; the target is on every host). */
export async function startVerify(
  node: ClusterNode,
  id: string,
  by: string,
): Promise<OperationRecord> {
  await node.linearizableRead();
  const b = mustGetBackup(node, id);
  return await createOperation(node, {
    id: newId("vfop-", 8),
    kind: "verify",
    target: b.id,
    runner: node.id,
    params: { backup: b.id, vm: b.vm },
    by,
  });
}

/**
 * Records a restore of backup `id` (its manifests already read and checked by the caller,
 * `source` from the newest). As a new VM: creates it first, stopped.
 */
export function startRestore(
  node: ClusterNode,
  id: string,
  req: RestoreRequest,
  source: RestoreSource,
  by: string,
): Promise<OperationRecord> {
  return serializedDecision(node, async () => {
    await node.linearizableRead();
    const b = mustGetBackup(node, id);
    if (!!req.as === !!req.inPlace) {
      throw ValidationError.field("as", "give either a new VM name (as) or inPlace");
    }
    let vm: VmRecord;
    if (req.inPlace) {
      const cur = node.fsm.vm(b.vm);
      if (!cur) throw new NotFoundError("vm", b.vm);
      if (!isAtRest(cur)) {
        throw new ConflictError(
          `VM "${b.vm}" is ${cur.state}; stop it before restoring in place (or restore --as NEWVM)`,
        );
      }
      const other = busy(node, cur.name);
      if (other) {
        throw new ConflictError(
          `VM "${cur.name}" has a ${other.kind} running (operation ${other.id})`,
        );
      }
      vm = cur;
    } else {
      vm = await createRestoredVm(node, b, req, source, by);
    }
    return await createOperation(node, {
      id: newId("rsop-", 8),
      kind: "restore",
      target: vm.name,
      runner: vm.node!,
      params: {
        backup: b.id,
        vm: vm.name,
        mode: req.inPlace ? "in-place" : "as",
        start: req.start === true,
      },
      by,
    });
  });
}

async function createRestoredVm(
  node: ClusterNode,
  b: BackupRecord,
  req: RestoreRequest,
  source: RestoreSource,
  by: string,
): Promise<VmRecord> {
  const name = req.as!;
  if (node.fsm.vm(name)) {
    throw new ConflictError(`as: VM "${name}" already exists`, { field: "as" });
  }
  if (!node.fsm.image(source.spec.image)) {
    throw ValidationError.field(
      "as",
      `the backed-up VM ran image "${source.spec.image}", which no longer exists`,
    );
  }
  const uuid = crypto.randomUUID();
  const disks: VmDisk[] = source.disks.map((d) => ({
    id: d.id,
    volume: `${name}-${uuid.slice(0, 8)}-${d.id}`,
    sizeBytes: Math.max(d.virtualBytes, GiB / 1024),
    pool: "dir",
    source: { kind: "backup", backup: b.id, disk: d.id },
  }));
  const spec: VmSpec = {
    name,
    uuid,
    image: source.spec.image,
    cpus: source.spec.cpus,
    memoryMiB: source.spec.memoryMiB,
    node: null,
    ha: false,
    labels: { "novactl.io/restored-from": b.id },
    desired: "stopped",
    restartPolicy: "never",
    disks,
    cloudInit: null,
    template: false,
    generation: 0,
    snapshots: [],
  };
  return await plannerOf(node).create(spec, { node: req.node }, by);
}
