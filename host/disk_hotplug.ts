/**
 * Disk hot-plug on a running VM: the host's reconcile loop (./vm_host.ts)
 * compares the attached volumes the VM's record lists (core/fsm/vm_disks.ts)
 * with the disks its QEMU has on disk root ports (its launch spec, kept
 * current here) and adds or removes the difference, as ./nic_hotplug.ts does
 * for NICs.
 *
 * - Add: QMP `blockdev-add` (a qcow2 node over the volume's file), then
 *   `device_add` of a virtio-blk disk on the volume's own PCIe root port.
 * - Remove: `device_del`, then wait for `DEVICE_DELETED` (the guest has let
 *   go of the disk), then `blockdev-del`.
 *
 * QEMU runs as its own user by then (host/kvm/confine.ts): it opens the
 * volume's file as that user, not as root as at start. So before the add the
 * file is given to that user, and every directory above it must let that user
 * through: one whose group and other bits are all clear (the node's 0700
 * data dir) gets the QEMU user's group with search (x) permission only;
 * anything else that bars the way is reported, not changed.
 *
 * Each step is safe to repeat: a retry after a failure, or after the node
 * restarted half-way, finds what is already done and goes on from there.
 *
 * @module
 */
import { dirname } from "node:path";
import { ConflictError, UnavailableError } from "../core/errors/mod.ts";
import type { VmDisk, VmRecord } from "../core/fsm/mod.ts";
import { log } from "../core/log/mod.ts";
import {
  blockdevAddQcow2,
  blockdevDel,
  deviceAddVirtioBlk,
  namedBlockNodes,
} from "./kvm/commands.ts";
import { diskPortId, type DiskSpec, type QemuVm } from "./kvm/mod.ts";
import type { QemuUser } from "./kvm/confine.ts";
import { devicePresent, UNPLUG_TIMEOUT_MS, unplugDevice } from "./kvm/unplug.ts";

/** What differs between the attached disks a QEMU has and those its VM's record lists. */
export interface DiskChanges {
  add: VmDisk[];
  remove: DiskSpec[];
}

/**
 * The disks to add and remove so that `current` (QEMU's disks on root ports) matches the
 * record's attached volumes; null when QEMU has no disk ports (launched before hot-plug: a
 * restart gives it them).
 */
export function diskChanges(
  current: DiskSpec[],
  wanted: VmDisk[],
  hasPorts: boolean,
): DiskChanges | null {
  const have = current.filter((d) => d.port !== undefined);
  const want = wanted.filter((d) => d.port !== undefined);
  // Same slot and, where the spec knows it, the same volume: a volume detached and another
  // attached on its port before this host looked is a swap, not "nothing to do".
  const same = (h: DiskSpec, w: VmDisk) =>
    h.id === w.id && h.port === w.port && (h.volume === undefined || h.volume === w.volume);
  const changes = {
    add: want.filter((w) => !have.some((h) => same(h, w))),
    remove: have.filter((h) => !want.some((w) => same(h, w))),
  };
  if (!hasPorts && changes.add.length) return null;
  return changes;
}

/**
 * Lets `user` open `path` for reading and writing: the file becomes theirs, and each
 * directory above it that bars them and has no group or other bits gets their group with
 * search permission. Throws an UnavailableError naming the directory otherwise.
 */
export async function grantQemuAccess(path: string, user: QemuUser | null): Promise<void> {
  if (!user) return; // QEMU runs as the node's own user: it can open what the node made
  await Deno.chown(path, user.uid, user.gid);
  await Deno.chmod(path, 0o600);
  for (let dir = dirname(path);; dir = dirname(dir)) {
    const st = await Deno.stat(dir);
    const mode = (st.mode ?? 0) & 0o7777;
    const passes = (mode & 0o001) !== 0 || st.uid === user.uid ||
      (st.gid === user.gid && (mode & 0o010) !== 0);
    if (!passes) {
      if ((mode & 0o077) !== 0) {
        throw new UnavailableError(
          `disk hot-plug: QEMU runs as ${user.name} and cannot reach ${dir} (mode ${
            mode.toString(8)
          }); give it search permission (chmod o+x, or a group ${user.name} is in)`,
        );
      }
      await Deno.chown(dir, st.uid, user.gid);
      await Deno.chmod(dir, mode | 0o010);
    }
    if (dir === "/" || dir === dirname(dir)) return;
  }
}

/** Hot-adds the attached volume `disk` (its file at `path`) to the running `qemu`. */
export async function hotAddDisk(
  qemu: QemuVm,
  disk: VmDisk,
  path: string,
  user: QemuUser | null,
): Promise<DiskSpec> {
  const spec: DiskSpec = {
    id: disk.id,
    path,
    format: "qcow2",
    port: disk.port,
    volume: disk.volume,
  };
  const dev = `${disk.id}-dev`;
  if (await devicePresent(qemu, dev)) return spec; // added before a restart
  await grantQemuAccess(path, user);
  if (!(await namedBlockNodes(qemu.qmp)).includes(disk.id)) {
    await blockdevAddQcow2(qemu.qmp, disk.id, path);
  }
  try {
    await deviceAddVirtioBlk(qemu.qmp, dev, disk.id, diskPortId(disk.port!));
  } catch (err) {
    await blockdevDel(qemu.qmp, disk.id).catch(() => {});
    throw err;
  }
  return spec;
}

/**
 * Hot-removes the disk `spec` from the running `qemu`: asks the guest to let go, waits for
 * `DEVICE_DELETED` (at most `timeoutMs`; a TimeoutError leaves the request pending, and a
 * later call waits again), then drops the block node.
 */
export async function hotRemoveDisk(
  qemu: QemuVm,
  spec: DiskSpec,
  timeoutMs = UNPLUG_TIMEOUT_MS,
): Promise<void> {
  await unplugDevice(qemu, `${spec.id}-dev`, `disk ${spec.id}`, timeoutMs);
  if ((await namedBlockNodes(qemu.qmp)).includes(spec.id)) {
    await blockdevDel(qemu.qmp, spec.id);
  }
}

/**
 * Makes the running `qemu`'s attached disks those `vm`'s record lists: removals first
 * (they free ports), then additions (`pathOf` gives a volume's file here). The launch spec
 * is updated and saved (`save`) after each step, so a restarted node re-adopts QEMU knowing
 * its devices. Returns whether anything changed.
 */
export async function syncDisks(
  vm: VmRecord,
  qemu: QemuVm,
  pathOf: (d: VmDisk) => Promise<string>,
  user: QemuUser | null,
  save: (qemu: QemuVm) => Promise<void>,
): Promise<boolean> {
  const changes = diskChanges(qemu.spec.disks, vm.disks, qemu.spec.diskPorts === true);
  if (!changes) {
    throw new ConflictError(
      `${vm.name} runs in a QEMU started before disk hot-plug (no disk ports); restart it to attach volumes`,
    );
  }
  for (const old of changes.remove) {
    const t0 = performance.now();
    await hotRemoveDisk(qemu, old);
    qemu.spec.disks = qemu.spec.disks.filter((d) => d !== old);
    await save(qemu);
    log.info("disk hot-unplugged", {
      vm: vm.name,
      disk: old.id,
      ms: Math.round(performance.now() - t0),
    });
  }
  for (const d of changes.add) {
    const t0 = performance.now();
    const spec = await hotAddDisk(qemu, d, await pathOf(d), user);
    qemu.spec.disks = [...qemu.spec.disks, spec];
    await save(qemu);
    log.info("disk hot-plugged", {
      vm: vm.name,
      disk: d.id,
      volume: d.volume,
      ms: Math.round(performance.now() - t0),
    });
  }
  return changes.add.length + changes.remove.length > 0;
}

/**
 * The attached volume disk `d` of a QEMU's spec is, by name (core/fsm/vm_devices.ts); one
 * whose launch spec predates the volume field is named from the record's disk with its id.
 */
export function pluggedDiskName(d: DiskSpec, vm: VmRecord): string | null {
  if (d.volume !== undefined) return d.volume;
  const rec = vm.disks.find((r) => r.id === d.id && r.source.kind === "attached");
  return rec ? rec.volume : null;
}
