/**
 * The host side of VMs: a level-triggered, idempotent reconcile loop that
 * makes the QEMU processes on this host match the desired state recorded in
 * the cluster, and reports what it observes back through Raft.
 *
 * Work on one VM is serialized (reconciles and host operations such as
 * snapshots never interleave); different VMs proceed in parallel.
 */
import { join } from "node:path";
import type { ClusterConfig } from "../core/config/mod.ts";
import type {
  Command,
  GuestInfo,
  ImageRecord,
  OperationRecord,
  VmDisk,
  VmRecord,
  VmSnapshot,
  VmState,
} from "../core/fsm/mod.ts";
import { ConflictError, NotFoundError, NovaError, ValidationError } from "../core/errors/mod.ts";
import { log } from "../core/log/mod.ts";
import { metrics } from "../core/metrics/mod.ts";
import { KeyedSerializer } from "../core/concurrency/mod.ts";
import { renderSeed } from "../core/cloudinit/mod.ts";
import type { Accel, Display, LaunchSpec, NicSpec, QemuDriver, QemuVm } from "./kvm/mod.ts";
import {
  blockNodeInfo,
  blockResize,
  internalSnapshotAll,
  jobCancel,
  jobDismiss,
  queryJobs,
  snapshotJob as startSnapshotJob,
} from "./kvm/commands.ts";
import { buildSeedIso, displayOf, followConsole, readConsole, rotateConsole } from "./kvm/mod.ts";
import type { QmpEvent } from "./kvm/qmp.ts";
import { BtrfsPool, type DirPool, HostPools, qemuImg, type VolumePool } from "./storage/mod.ts";
import type { PoolRecord } from "../core/fsm/mod.ts";
import { MIGRATION_TAG } from "./storage/btrfs.ts";
import { syncDisks } from "./disk_hotplug.ts";
import { PluggedDevices } from "./plugged_devices.ts";
import type { HostNics } from "./ovs/host_network.ts";
import { syncNics } from "./nic_hotplug.ts";
import { noteGuestAddresses } from "./guest_addresses.ts";
import { featureAllowed } from "../core/upgrade/levels.ts";
import { samePlugged } from "../core/fsm/vm_devices.ts";
import {
  connectVnc,
  type ConsoleAttachment,
  type ConsoleSink,
  SerialConsoles,
} from "./console/mod.ts";

/** What the host needs from the cluster: committed state in, observations out. */
export interface HostCluster {
  readonly nodeName: string;
  vm(name: string): VmRecord | null;
  /** The VMs placed on this host (found by index: not a scan of every VM). */
  vmsHere(): VmRecord[];
  image(name: string): ImageRecord | null;
  operation(id: string): OperationRecord | null;
  config(): ClusterConfig;
  /** The cluster level (core/upgrade/): features newer than it stay off here. */
  level(): number;
  onVmChange(listener: (name: string | null) => void): () => void;
  /** Proposes through the leader; rejects when there is none. */
  /** `readOwnWrite: false` skips waiting for the local replica to apply it (latency-critical steps). */
  report(command: Command, opts?: { readOwnWrite?: boolean }): Promise<unknown>;
  /** Audits an action this host took on its own (principal: system:<action prefix>). */
  audit?(action: string, resource: string, detail: string): void;
  /** Makes the image's files present here; returns their local paths. */
  pullImage(name: string): Promise<{ kernel?: string; initrd?: string; disk?: string }>;
  /** A storage pool's record (core/fsm/pools.ts); absent: only the built-in pools exist. */
  pool?(name: string): PoolRecord | null;
  pools?(): PoolRecord[];
}

export interface Runtime {
  qemu: QemuVm;
  /** Started with -incoming for this migration; not yet the VM's home. */
  incoming?: string;
  /** Set before we stop it ourselves, so the exit is not taken for a crash. */
  expectedExit: boolean;
  /** The guest powered itself off (QMP SHUTDOWN with guest=true). */
  guestShutdown: boolean;
  unwatch: () => void;
}

const RECONCILE_EVERY_MS = 2_000;
const GUEST_POLL_MS = 3_000;
const GUEST_REFRESH_MS = 15_000;
/** After a hot-add, how long its guest's uptake is looked at sooner than every round, and how often. */
const PLUG_FOLLOW_MS = 30_000;
const PLUG_FOLLOW_EVERY_MS = 200;

export class VmHost {
  /** Internal to host/: the QEMUs this host runs (the migrator shares it). */
  readonly runtimes = new Map<string, Runtime>();
  /** Clients attached to running VMs' serial consoles. */
  private readonly consoles = new SerialConsoles();
  private readonly work = new KeyedSerializer();
  private readonly reports = new KeyedSerializer();
  private readonly queued = new Set<string>();
  private readonly restarts = new Map<string, number[]>();
  private readonly guestPolledAt = new Map<string, number>();
  /** Per running VM: its QEMU's pid and the disk sizes that QEMU has (growRunningDisks). */
  private readonly diskBytes = new Map<string, { pid: number; bytes: Map<string, number> }>();
  /** What each QEMU's guest has set up of its hot-pluggable devices (./plugged_devices.ts). */
  private readonly plugged = new PluggedDevices();
  /** Per VM: until when a device just hot-added is looked at again soon (not every 2 s). */
  private readonly plugFollowUntil = new Map<string, number>();
  /** HA VMs whose start failed here: the leader places them again, this host does not retry. */
  private readonly haStartFailed = new Set<string>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private unsubscribe: (() => void) | null = null;
  private stopped = false;

  readonly cluster: HostCluster;
  /** Runs migrations this host is the source of (set by the node wiring). */
  migrator: {
    isRunning(opId: string): boolean;
    run(vm: VmRecord, op: OperationRecord): Promise<void>;
  } | null = null;
  readonly driver: QemuDriver;
  readonly pool: DirPool;
  private readonly accel: () => Promise<Accel>;
  private readonly lease: { holds(): boolean };
  private fenceTimer: ReturnType<typeof setInterval> | null = null;
  /** Set once this host's state caught up with the leader's: only then may drift be acted on. */
  private caughtUp = false;
  /**
   * Set once start() has re-adopted the QEMUs that outlived the previous node process. No
   * reconcile may run before: it would take a running VM's missing runtime for a crash, and
   * its restart policy could then stop the very QEMU being adopted.
   */
  private adopted = false;
  /** The host's storage pools, from the replicated records (host/storage/host_pools.ts). */
  readonly pools: HostPools;
  /** The host's networking (taps for NICs on networks); null with `--networking off`. */
  private readonly nics: HostNics | null;

  constructor(opts: {
    cluster: HostCluster;
    driver: QemuDriver;
    pool: DirPool;
    accel: () => Promise<Accel>;
    /** Whether this host holds its lease (may run HA VMs); always true without HA. */
    lease?: { holds(): boolean };
    nics?: HostNics | null;
    pools?: HostPools;
  }) {
    this.cluster = opts.cluster;
    this.driver = opts.driver;
    this.pool = opts.pool;
    const cluster = opts.cluster;
    this.pools = opts.pools ?? new HostPools(opts.pool, {
      nodeName: cluster.nodeName,
      pool: (name) => cluster.pool ? cluster.pool(name) : builtinPool(cluster, name),
      pools: () => cluster.pools?.() ?? [],
    });
    this.accel = opts.accel;
    this.lease = opts.lease ?? { holds: () => true };
    this.nics = opts.nics ?? null;
  }

  /** The pool a disk lives in: the host's own `dir`, the cluster's shared one, or any other. */
  poolOf(d: VmDisk): VolumePool {
    const name = d.pool ?? "dir";
    if (name === "shared" && !this.cluster.config()["storage.sharedDir"]) {
      throw new ConflictError("the VM uses the shared pool but storage.sharedDir is not set");
    }
    return this.pools.backend(name);
  }

  /** Whether a disk's pool is the same on every host (a migration leaves it in place). */
  isSharedDisk(d: VmDisk): boolean {
    const name = d.pool ?? "dir";
    if (name === "shared") return true; // the built-in one, as before pools
    const p = this.cluster.pool ? this.cluster.pool(name) : builtinPool(this.cluster, name);
    return p?.driver === "shared-dir";
  }

  /** Whether the cluster's level lets this host use and report display devices. */
  private displays(): boolean {
    return featureAllowed("display", this.cluster.level());
  }

  isCaughtUp(): boolean {
    return this.caughtUp;
  }

  /** The host's state is now at least as new as the leader's was at `index`'s time. */
  markCaughtUp(): void {
    if (!this.caughtUp) {
      this.caughtUp = true;
      this.reconcileAll();
      // Taps of VMs restarted elsewhere while this host was down (host/ovs/stale_taps.ts).
      void this.nics?.removeForeignTaps((name) => {
        const vm = this.cluster.vm(name);
        const here = vm?.node === this.nodeName || vm?.migration?.to === this.nodeName;
        return vm && (here || this.runtimes.has(name)) ? vm.uuid : null;
      }).catch((err) => log.warn("could not remove stale taps", { error: String(err) }));
    }
  }

  get nodeName(): string {
    return this.cluster.nodeName;
  }

  /** Re-adopts running QEMUs (they outlived the previous node process), then starts reconciling. */
  async start(): Promise<void> {
    for (const name of await this.driver.known()) {
      try {
        const qemu = await this.driver.adopt(name);
        if (qemu) {
          this.track(name, qemu);
          log.info("re-adopted running VM", { vm: name, pid: qemu.pid });
        }
      } catch (err) {
        log.warn("cannot re-adopt VM", { vm: name, error: String(err) });
      }
    }
    this.adopted = true;
    this.unsubscribe = this.cluster.onVmChange((name) => {
      if (name === null) this.reconcileAll();
      else this.schedule(name);
    });
    this.reconcileAll();
    this.timer = setInterval(() => this.tick(), RECONCILE_EVERY_MS);
    this.fenceTimer = setInterval(() => this.fenceIfLeaseLost(), 200);
  }

  /**
   * Self-fencing: a host that cannot renew its lease kills its HA VMs before
   * the lease expires, because the leader restarts them elsewhere after. The
   * fencing watchdog (host/fencing) does the same even when this process is
   * dead or hung; this is the in-process second copy.
   */
  private fenceIfLeaseLost(): void {
    if (this.lease.holds()) return;
    for (const [name, rt] of this.runtimes) {
      const vm = this.cluster.vm(name);
      if (!vm?.ha || rt.expectedExit || !rt.qemu.alive()) continue;
      log.warn("lease lost: fencing HA VM", { vm: name, pid: rt.qemu.pid });
      this.cluster.audit?.("fencing.kill", `vm/${name}`, "lease lost: HA VM killed");
      metrics.fencingEvents.inc({ event: "vm_killed" });
      rt.expectedExit = true;
      try {
        Deno.kill(rt.qemu.pid, "SIGKILL");
      } catch { /* already gone */ }
    }
  }

  /** Stops reconciling; VMs keep running (they outlive the node by design). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.fenceTimer) clearInterval(this.fenceTimer);
    this.unsubscribe?.();
    for (const rt of this.runtimes.values()) {
      rt.unwatch();
      rt.qemu.close();
    }
  }

  runningCount(): number {
    return this.runtimes.size;
  }

  private tick(): void {
    this.reconcileAll();
    void this.housekeeping();
  }

  private reconcileAll(): void {
    const names = new Set(this.runtimes.keys());
    for (const vm of this.cluster.vmsHere()) names.add(vm.name);
    for (const n of names) this.schedule(n);
  }

  /** Queues one reconcile of `name` behind whatever runs for it now (coalescing repeats). */
  schedule(name: string): void {
    // Before adoption ends, start() reconciles everything once it has.
    if (this.stopped || !this.adopted || this.queued.has(name)) return;
    this.queued.add(name);
    void this.serialize(name, async () => {
      this.queued.delete(name);
      try {
        await this.reconcile(name);
      } catch (err) {
        log.warn("reconcile failed; will retry", { vm: name, error: String(err) });
      }
    });
  }

  /** Runs `fn` once every earlier task on this VM finished. */
  serialize<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.work.run(name, fn);
  }

  // ---- reconcile ------------------------------------------------------------

  private async reconcile(name: string): Promise<void> {
    const vm = this.cluster.vm(name);
    const rt = await this.reconnectIfDropped(name);
    if (!vm || vm.node !== this.nodeName) return await this.foreign(name, vm, rt);
    if (vm.migration && this.migrator && !this.migrator.isRunning(vm.migration.opId)) {
      const op = this.cluster.operation(vm.migration.opId);
      if (op?.state === "running") {
        void this.migrator.run(vm, op); // takes this VM's lock after this reconcile
        return;
      }
    }
    if (vm.desired === "running") await this.ensureRunning(vm, rt);
    else if (vm.desired === "stopped") await this.ensureStopped(vm, rt);
    else await this.ensureDeleted(vm, rt);
  }

  /**
   * Our QMP connection can drop while QEMU lives on (a monitor hiccup, a
   * restart of the socket): connect again instead of taking it for a crash.
   */
  private async reconnectIfDropped(name: string): Promise<Runtime | undefined> {
    const rt = this.runtimes.get(name);
    if (!rt || !rt.qemu.qmp.isClosed() || !rt.qemu.alive()) return rt;
    log.info("QMP connection lost; reconnecting", { vm: name, pid: rt.qemu.pid });
    const qemu = await this.driver.adopt(name);
    if (!qemu) return rt;
    const { incoming, expectedExit, guestShutdown } = rt;
    this.forget(name);
    this.track(name, qemu, incoming);
    const fresh = this.runtimes.get(name)!;
    Object.assign(fresh, { expectedExit, guestShutdown });
    return fresh;
  }

  /**
   * A QEMU here for a VM placed elsewhere (moved by HA or migrated while this
   * host was cut off) must not keep running: once this host's state is known
   * to be current, it is stopped. An incoming migration is the exception.
   */
  private async foreign(name: string, vm: VmRecord | null, rt: Runtime | undefined): Promise<void> {
    if (!rt) return;
    if (!rt.qemu.alive()) return this.forget(name);
    if (rt.incoming && vm?.migration?.to === this.nodeName) return;
    log.warn("drift: QEMU runs for a VM not placed on this host", {
      vm: name,
      placedOn: vm?.node ?? null,
      pid: rt.qemu.pid,
    });
    if (!this.caughtUp || !vm) return;
    await this.stopRuntime(name, rt, true);
    await this.unplugNics(vm);
  }

  private async ensureRunning(vm: VmRecord, rt: Runtime | undefined): Promise<void> {
    if (this.haStartFailed.has(vm.name)) {
      if (vm.state === "failed" && !rt) return;
      this.haStartFailed.delete(vm.name);
    }
    if (vm.ha && !this.lease.holds() && !(rt && rt.qemu.alive())) {
      log.debug("not starting HA VM without a lease", { vm: vm.name });
      return;
    }
    if (rt && rt.qemu.alive()) {
      if (rt.qemu.spec.generation < vm.generation) {
        await this.report(vm, "stopping", "restarting");
        await this.stopRuntime(vm.name, rt, false);
        return await this.launch(vm);
      }
      return await this.checkRunning(vm, rt);
    }
    if (rt) return await this.onExit(vm, rt);
    if (["running", "starting", "stopping"].includes(vm.state)) {
      return await this.onCrash(vm, "QEMU was not running when the host checked");
    }
    await this.launch(vm);
  }

  private async checkRunning(vm: VmRecord, rt: Runtime): Promise<void> {
    if (rt.incoming) return; // the migration resumes it
    let status = await rt.qemu.status();
    if (status === "prelaunch" || (status === "paused" && vm.state !== "running")) {
      await rt.qemu.cont();
      status = await rt.qemu.status();
    }
    // NICs added or removed while it runs (core/fsm/vm_nics.ts): hot-plugged here.
    if (status === "running" && this.nics) {
      const changed = await syncNics(
        vm,
        rt.qemu,
        this.nics,
        (q) => this.driver.saveLaunchSpec(q.spec),
      );
      if (changed) this.plugFollowUntil.set(vm.name, Date.now() + PLUG_FOLLOW_MS);
    }
    // Volumes attached or detached while it runs (core/fsm/vm_disks.ts): hot-plugged here.
    // A failure here (a guest slow to release a disk, a QEMU without disk ports) is retried
    // on the next round; it must not keep the VM's state from being reported.
    if (status === "running") {
      const changed = await syncDisks(
        vm,
        rt.qemu,
        async (d) => (await this.poolOf(d).info(d.volume)).path,
        this.driver.user,
        (q) => this.driver.saveLaunchSpec(q.spec),
      ).catch((err) => {
        log.warn("disk hot-plug not done; will retry", { vm: vm.name, error: String(err) });
        return false;
      });
      if (changed) this.plugFollowUntil.set(vm.name, Date.now() + PLUG_FOLLOW_MS);
    }
    // A disk grown while it runs (`vm resize --disk-size`): grown here with block_resize.
    if (status === "running") {
      await this.growRunningDisks(vm, rt.qemu).catch((err) =>
        log.warn("disk resize not done; will retry", { vm: vm.name, error: String(err) })
      );
    }
    if (status === "running") {
      await this.reportDevices(vm, rt.qemu).catch((err) =>
        log.warn("plugged devices not reported; will retry", { vm: vm.name, error: String(err) })
      );
    }
    const observed: VmState = status === "running" ? "running" : "failed";
    const reason = observed === "failed" ? `QEMU reports status "${status}"` : null;
    if (
      vm.state !== observed || vm.reason !== reason ||
      (this.displays() && (vm.display ?? null) !== displayOf(rt.qemu.spec))
    ) await this.report(vm, observed, reason);
  }

  /**
   * Reports what `qemu` has plugged and its guest set up (`vm.devices`, ./plugged_devices.ts)
   * when it differs from the record: only on a change, never every round (each report is a
   * Raft entry). Reports wait for the local replica to apply them, so the next round compares
   * against this one. Held back below the level that knows the command (core/upgrade/levels.ts:
   * an older leader refuses it).
   */
  private async reportDevices(vm: VmRecord, qemu: QemuVm): Promise<void> {
    if (!featureAllowed("devices", this.cluster.level())) return;
    const plugged = await this.plugged.of(vm, qemu);
    // A device just hot-added that its guest has not set up yet: looked at again soon.
    const follow = this.plugFollowUntil.get(vm.name) ?? 0;
    if (Date.now() < follow && this.plugged.pending(vm, qemu)) {
      setTimeout(() => this.schedule(vm.name), PLUG_FOLLOW_EVERY_MS);
    } else if (follow) this.plugFollowUntil.delete(vm.name);
    if (samePlugged(vm.plugged, plugged)) return;
    // Nothing set up yet, nothing recorded: null says as much (no entry for every start of a VM
    // without volumes or NICs, nor while a guest boots).
    if (!plugged.disks.length && !plugged.nics.length && !vm.plugged) return;
    await this.reports.run(vm.name, () =>
      this.cluster.report({
        op: "vm.devices",
        name: vm.name,
        node: this.nodeName,
        plugged,
        at: Date.now(),
      }));
  }

  /** The QEMU we tracked is gone: a stop we asked for, the guest powering off, or a crash. */
  private async onExit(vm: VmRecord, rt: Runtime): Promise<void> {
    this.forget(vm.name);
    if (rt.expectedExit) return this.schedule(vm.name);
    if (rt.guestShutdown && vm.restartPolicy !== "always") {
      await this.report(vm, "stopped", "the guest powered off");
      await this.settle(vm.name, "stopped");
      return;
    }
    await this.onCrash(
      vm,
      rt.guestShutdown ? "the guest powered off" : `QEMU (pid ${rt.qemu.pid}) exited unexpectedly`,
    );
  }

  /** Reports the failure and restarts when the VM's policy and restart budget allow. */
  private async onCrash(vm: VmRecord, reason: string): Promise<void> {
    log.warn("VM failed", { vm: vm.name, reason });
    if (vm.restartPolicy !== "never" && this.restartBudgetLeft(vm.name)) {
      await this.report(vm, "failed", `${reason}; restarting`);
      return await this.launch(vm);
    }
    const why = vm.restartPolicy === "never" ? reason : `${reason}; restart limit reached`;
    await this.report(vm, "failed", why);
    await this.settle(vm.name, "stopped");
  }

  private restartBudgetLeft(name: string): boolean {
    const cfg = this.cluster.config();
    const now = Date.now();
    const recent = (this.restarts.get(name) ?? []).filter(
      (t) => now - t < cfg["vms.restartWindowMs"],
    );
    if (recent.length >= cfg["vms.restartLimit"]) return false;
    this.restarts.set(name, [...recent, now]);
    return true;
  }

  private async ensureStopped(vm: VmRecord, rt: Runtime | undefined): Promise<void> {
    this.haStartFailed.delete(vm.name); // a later start is the user's: it runs here again
    if (rt && rt.qemu.alive()) {
      await this.report(vm, "stopping");
      await this.stopRuntime(vm.name, rt, !!vm.force);
      await this.unplugNics(vm);
      return await this.report(vm, "stopped");
    }
    if (rt) {
      this.forget(vm.name);
      await this.unplugNics(vm);
    }
    if (vm.state !== "stopped" && vm.state !== "failed") await this.report(vm, "stopped");
  }

  private async ensureDeleted(vm: VmRecord, rt: Runtime | undefined): Promise<void> {
    if (rt && rt.qemu.alive()) {
      await this.report(vm, "stopping", "deleting");
      await this.stopRuntime(vm.name, rt, true);
    } else if (rt) this.forget(vm.name);
    await this.removeFromHost(vm, { keepDisks: vm.keepDisks });
    this.restarts.delete(vm.name);
    this.haStartFailed.delete(vm.name);
    await this.cluster.report({
      op: "vm.remove",
      name: vm.name,
      node: this.nodeName,
      at: Date.now(),
    });
  }

  async stopRuntime(name: string, rt: Runtime, force: boolean): Promise<void> {
    rt.expectedExit = true;
    const how = await rt.qemu.stop({
      timeoutMs: this.cluster.config()["vms.stopTimeoutMs"],
      force,
    });
    log.info("VM stopped", { vm: name, how });
    this.forget(name);
  }

  // ---- launching ----------------------------------------------------------------

  private async launch(
    vm: VmRecord,
    opts: { loadvm?: string; display?: Display } = {},
  ): Promise<void> {
    // Not awaited: "starting" commits while QEMU starts; later reports queue behind it.
    this.report(vm, "starting").catch(() => {});
    const t0 = performance.now();
    try {
      const spec = await this.launchSpec(vm, opts);
      const t1 = performance.now();
      const qemu = await this.driver.launch(spec);
      const t2 = performance.now();
      this.track(vm.name, qemu);
      await qemu.cont();
      const t3 = performance.now();
      await this.report(vm, "running");
      log.debug("VM started", {
        vm: vm.name,
        prepareMs: Math.round(t1 - t0),
        qemuMs: Math.round(t2 - t1),
        contMs: Math.round(t3 - t2),
        reportMs: Math.round(performance.now() - t3),
      });
    } catch (err) {
      const reason = `start failed: ${(err as Error).message}`;
      log.warn("VM start failed", { vm: vm.name, error: reason });
      const rt = this.runtimes.get(vm.name);
      if (rt) await this.stopRuntime(vm.name, rt, true).catch(() => {});
      await this.report(vm, "failed", reason);
      // An HA VM is the leader's to place again (elsewhere, within its HA policy).
      if (vm.ha) this.haStartFailed.add(vm.name);
      else await this.settle(vm.name, "stopped");
    }
  }

  async launchSpec(
    vm: VmRecord,
    opts: {
      loadvm?: string;
      incoming?: string;
      blankLocalDisks?: boolean;
      diskPorts?: boolean;
      display?: Display;
    },
  ): Promise<LaunchSpec> {
    const image = this.cluster.image(vm.image);
    if (!image) throw new NotFoundError("image", vm.image);
    const files = await this.cluster.pullImage(vm.image);
    const disks = [];
    // Volumes on ports need the ports: a fresh QEMU always has them; an incoming one only
    // when its source has them (else the devices differ and the migration fails).
    const diskPorts = opts.incoming ? opts.diskPorts === true : true;
    // Likewise the display device: a fresh boot gets one; saved guest state (an incoming
    // stream, a memory snapshot) is loaded with the device it was saved with, none if unsaid.
    // A fresh boot gets one once every member knows displays (core/upgrade/levels.ts).
    const display: Display = opts.incoming || opts.loadvm
      ? opts.display ?? "none"
      : this.displays()
      ? "vga"
      : "none";
    for (const d of vm.disks) {
      disks.push({
        id: d.id,
        path: await this.prepareDisk(d, files.disk, !!opts.blankLocalDisks),
        format: "qcow2" as const,
        ...(d.port !== undefined ? { port: d.port } : {}),
        ...(d.source.kind === "attached" ? { volume: d.volume } : {}),
      });
    }
    if (vm.cloudInit) {
      const paths = this.driver.paths(vm.name);
      await Deno.mkdir(paths.dir, { recursive: true, mode: 0o700 });
      const iso = join(paths.dir, "seed.iso");
      await buildSeedIso(iso, renderSeed(vm, vm.cloudInit));
      disks.push({ id: "seed", path: iso, format: "raw" as const, readOnly: true });
    }
    return {
      name: vm.name,
      uuid: vm.uuid,
      cpus: vm.cpus,
      memoryMiB: vm.memoryMiB,
      accel: await this.accel(),
      kernel: image.kind === "kernel"
        ? { path: files.kernel!, initrd: files.initrd, cmdline: image.cmdline }
        : undefined,
      disks,
      nics: await this.nicSpecs(vm),
      loadvm: opts.loadvm,
      incoming: opts.incoming,
      generation: vm.generation,
      fenced: vm.ha,
      diskPorts,
      consoles: true,
      display,
    };
  }

  /**
   * QEMU's NICs: a tap per NIC on a network, plugged before QEMU starts (an
   * incoming migration's too); a VM without NICs keeps its one restricted
   * user-mode NIC.
   */
  private async nicSpecs(vm: VmRecord): Promise<NicSpec[]> {
    if (!vm.nics?.length) return [{ id: "net0", mac: macFor(vm.uuid) }];
    if (!this.nics) {
      const networks = [...new Set(vm.nics.map((n) => n.network))].join(", ");
      throw new NovaError(
        "precondition_failed",
        `${vm.name} has NICs on networks (${networks}), but networking is off on ${this.nodeName} (--networking off)`,
      );
    }
    return await this.nics.plug(vm);
  }

  /**
   * Waits (at most `timeoutMs`) until ovn-controller bound the VM's NIC ports on this host and
   * installed their flows. An incoming migration waits for it before the stream starts: with
   * the port bound here as an additional chassis (host/ovs/northbound_migration.ts), traffic
   * moves as soon as the guest announces itself after the switchover. Not bound in time: the
   * migration goes on (the guest's network then follows the commit, later), with a warning.
   */
  async waitNicsInstalled(vm: VmRecord, timeoutMs = 10_000): Promise<void> {
    if (!vm.nics?.length || !this.nics) return;
    const t0 = performance.now();
    const bound = await this.nics.waitInstalled(vm, timeoutMs);
    const ms = Math.round(performance.now() - t0);
    if (bound) log.debug("NIC ports bound here", { vm: vm.name, ms });
    else log.warn("NIC ports not bound here in time; migrating anyway", { vm: vm.name, ms });
  }

  /** Removes the taps of a VM that no longer runs here (best effort: a leftover tap is harmless). */
  private async unplugNics(vm: VmRecord): Promise<void> {
    if (!vm.nics?.length || !this.nics) return;
    await this.nics.unplug(vm).catch((err) =>
      log.warn("could not unplug NICs", { vm: vm.name, error: String(err) })
    );
  }

  /** Creates the volume on first start (from its source) and grows it when the spec grew. */
  private async prepareDisk(
    d: VmDisk,
    imageDisk: string | undefined,
    incoming = false,
  ): Promise<string> {
    const src = d.source;
    const pool = this.poolOf(d);
    if (!(await pool.has(d.volume))) {
      // A host-local volume arriving by live migration: made blank, the mirror fills it.
      if (src.kind === "attached" && incoming) {
        return (await pool.create(d.volume, d.sizeBytes)).path;
      }
      if (src.kind === "blank") return (await pool.create(d.volume, d.sizeBytes)).path;
      if (src.kind === "image") {
        if (!imageDisk) throw ValidationError.field("image", "image has no disk");
        return (await pool.overlayOn(imageDisk, "qcow2", d.volume, d.sizeBytes)).path;
      }
      if (src.kind === "attached") {
        throw new NotFoundError(
          "volume",
          `${d.volume} (in pool ${d.pool ?? "dir"} on ${this.nodeName})`,
        );
      }
      if (src.kind === "backup") {
        // Made by the restore operation (host/backup/), never on start: a missing one is not blank.
        throw new ConflictError(
          `disk ${d.id} is restored from backup ${src.backup}; its restore has not finished`,
        );
      }
      if (src.mode === "linked") await pool.cloneLinked(src.volume, d.volume);
      else await pool.cloneFull(src.volume, d.volume);
    }
    const info = await pool.info(d.volume);
    if (info.virtualBytes < d.sizeBytes) await pool.resize(d.volume, d.sizeBytes);
    return info.path;
  }

  track(name: string, qemu: QemuVm, incoming?: string): void {
    const rt: Runtime = {
      qemu,
      incoming,
      expectedExit: false,
      guestShutdown: false,
      unwatch: () => {},
    };
    const off = qemu.qmp.on((e: QmpEvent) => {
      if (e.event === "SHUTDOWN" && e.data?.guest === true) rt.guestShutdown = true;
    });
    let live = true;
    rt.unwatch = () => {
      live = false;
      off();
    };
    // QEMU runs detached, not awaited: its QMP socket closing is how we learn it exited.
    qemu.qmp.closed.then(() => {
      if (live) this.schedule(name);
    });
    this.runtimes.get(name)?.unwatch();
    this.runtimes.set(name, rt);
  }

  forget(name: string): void {
    const rt = this.runtimes.get(name);
    if (!rt) return;
    rt.unwatch();
    rt.qemu.close();
    this.runtimes.delete(name);
    this.guestPolledAt.delete(name);
    this.diskBytes.delete(name);
    this.plugged.forget(name);
    this.plugFollowUntil.delete(name);
  }

  /**
   * Grows each of a running VM's own disks (not attached volumes: `volume resize` grows those
   * itself) whose recorded size exceeds what its QEMU has, through QMP `block_resize`: the
   * guest sees the new size at once. What QEMU has is asked once per QEMU and then followed
   * here, so a round without a change costs no QMP call.
   */
  private async growRunningDisks(vm: VmRecord, qemu: QemuVm): Promise<void> {
    let known = this.diskBytes.get(vm.name);
    if (!known || known.pid !== qemu.pid) {
      known = { pid: qemu.pid, bytes: new Map() };
      this.diskBytes.set(vm.name, known);
    }
    for (const d of vm.disks) {
      if (d.source.kind === "attached" || !qemu.spec.disks.some((x) => x.id === d.id)) continue;
      let have = known.bytes.get(d.id);
      if (have === undefined) {
        const info = await blockNodeInfo(qemu.qmp, d.id);
        if (!info) continue;
        have = info.virtualBytes;
        known.bytes.set(d.id, have);
      }
      if (d.sizeBytes <= have) continue;
      await blockResize(qemu.qmp, d.id, d.sizeBytes);
      known.bytes.set(d.id, d.sizeBytes);
      log.info("disk grown while running", {
        vm: vm.name,
        disk: d.id,
        from: have,
        to: d.sizeBytes,
      });
    }
  }

  /**
   * The host changes what is wanted of a VM: after a failure it will not
   * retry (stopped), or a restore resumed it (running). Recorded as the host.
   */
  private async settle(name: string, desired: "running" | "stopped"): Promise<void> {
    await this.cluster.report({
      op: "vm.desired",
      name,
      desired,
      by: `host:${this.nodeName}`,
      at: Date.now(),
    });
  }

  /** Reports of one VM commit in the order they were made. */
  report(vm: VmRecord, state: VmState, reason: string | null = null): Promise<void> {
    return this.reports.run(vm.name, () => this.sendReport(vm, state, reason));
  }

  private async sendReport(vm: VmRecord, state: VmState, reason: string | null): Promise<void> {
    const rt = this.runtimes.get(vm.name);
    await this.cluster.report({
      op: "vm.observed",
      name: vm.name,
      node: this.nodeName,
      state,
      reason: reason ?? undefined,
      guest: state === "running" ? undefined : null,
      ...(this.displays()
        ? { display: rt && rt.qemu.alive() ? displayOf(rt.qemu.spec) : null }
        : {}),
      at: Date.now(),
    });
  }

  // ---- periodic housekeeping: console bounds, guest agent ---------------------

  private async housekeeping(): Promise<void> {
    const maxBytes = this.cluster.config()["vms.consoleMaxBytes"];
    for (const [name, rt] of this.runtimes) {
      await rotateConsole(rt.qemu.paths.console, maxBytes).catch(() => false);
      await this.pollGuest(name, rt).catch((err) =>
        log.debug("guest poll failed", { vm: name, error: String(err) })
      );
    }
  }

  private async pollGuest(name: string, rt: Runtime): Promise<void> {
    const vm = this.cluster.vm(name);
    if (!vm || vm.state !== "running") return;
    const every = vm.guest?.agent === "ok" ? GUEST_REFRESH_MS : GUEST_POLL_MS;
    if (Date.now() - (this.guestPolledAt.get(name) ?? 0) < every) return;
    this.guestPolledAt.set(name, Date.now());
    const guest = await this.guestInfo(rt.qemu);
    if (JSON.stringify(guest) === JSON.stringify(vm.guest)) return;
    noteGuestAddresses(vm, guest);
    await this.serialize(name, async () => {
      const now = this.cluster.vm(name);
      if (now?.state !== "running" || this.runtimes.get(name) !== rt) return;
      await this.cluster.report({
        op: "vm.observed",
        name,
        node: this.nodeName,
        state: "running",
        guest,
        at: Date.now(),
      });
    });
  }

  private async guestInfo(qemu: QemuVm): Promise<GuestInfo> {
    if (!(await qemu.agent.ping(1_500))) return { agent: "absent" };
    const os = await qemu.agent.osInfo();
    const ifaces = await qemu.agent.interfaces();
    return {
      agent: "ok",
      os: {
        id: os.id,
        name: os.name,
        prettyName: os.prettyName,
        version: os.version,
        kernel: os.kernelRelease,
      },
      interfaces: ifaces.filter((i) => i.name !== "lo").map((i) => ({
        name: i.name,
        mac: i.mac,
        addresses: i.addresses.map((a) => `${a.address}/${a.prefix}`),
      })),
    };
  }

  // ---- host operations (called by the API on the VM's host) -------------------

  mine(name: string): VmRecord {
    const vm = this.cluster.vm(name);
    if (!vm) throw new NotFoundError("vm", name);
    if (vm.node !== this.nodeName) {
      throw new ConflictError(`VM "${name}" is not on ${this.nodeName}`);
    }
    return vm;
  }

  live(name: string): QemuVm | null {
    const rt = this.runtimes.get(name);
    return rt && rt.qemu.alive() ? rt.qemu : null;
  }

  async console(name: string, maxBytes: number): Promise<Uint8Array<ArrayBuffer>> {
    this.mine(name);
    return await readConsole(this.driver.paths(name).console, maxBytes);
  }

  /**
   * Attaches `sink` to the running VM's interactive serial console (host/console).
   * @throws {ConflictError} the VM is not running here, or its QEMU (started by a version
   *   without interactive consoles) has a log only
   */
  async attachSerial(name: string, sink: ConsoleSink): Promise<ConsoleAttachment> {
    const qemu = this.interactive(name);
    try {
      return await this.consoles.attach(name, qemu.paths, sink);
    } catch (err) {
      if (err instanceof NovaError) throw err;
      throw new ConflictError(
        `the serial console of ${name} is unavailable: ${(err as Error).message}`,
      );
    }
  }

  /**
   * A connection to the running VM's VNC server (host/console).
   * @throws {ConflictError} as {@link attachSerial}
   */
  async connectVnc(name: string): Promise<Deno.UnixConn> {
    const qemu = this.interactive(name);
    try {
      return await connectVnc(qemu.paths.vnc);
    } catch (err) {
      throw new ConflictError(
        `the VNC console of ${name} is unavailable: ${(err as Error).message}`,
      );
    }
  }

  private interactive(name: string): QemuVm {
    const vm = this.mine(name);
    const qemu = this.live(name);
    if (!qemu || vm.state !== "running") {
      throw new ConflictError(`VM "${name}" is not running (state ${vm.state})`);
    }
    if (!qemu.spec.consoles) {
      throw new ConflictError(
        `VM "${name}" was started by an older novactl: its serial console is a log only ` +
          `(novactl vm console ${name}); restart the VM for interactive consoles`,
      );
    }
    return qemu;
  }

  async followConsole(name: string, signal: AbortSignal, backlogBytes: number) {
    this.mine(name);
    const path = this.driver.paths(name).console;
    return followConsole(path, signal, await readConsole(path, backlogBytes));
  }

  createSnapshot(name: string, snap: string, memory: boolean): Promise<VmSnapshot> {
    return this.serialize(name, async () => {
      const vm = this.mine(name);
      if (vm.template) throw new ConflictError(`"${name}" is a template; templates are immutable`);
      if (vm.snapshots.some((s) => s.name === snap)) {
        throw new ConflictError(`snapshot "${snap}" already exists`);
      }
      const qemu = this.live(name);
      if (memory && !qemu) {
        throw new ConflictError(`a snapshot with memory needs ${name} running`);
      }
      let vmState = "stopped";
      if (qemu) {
        vmState = await qemu.status();
        if (memory) await snapshotJob(qemu, "snapshot-save", snap, vm.disks);
        else await this.diskSnapshotLive(qemu, snap, vm.disks);
      } else {
        await this.snapshotVolumes(vm, "create", snap);
      }
      const record: VmSnapshot = {
        name: snap,
        memory,
        createdAt: new Date().toISOString(),
        vmState,
        // Its saved device state is loadable only into a QEMU with the same display device.
        ...(memory && qemu && this.displays() ? { display: displayOf(qemu.spec) } : {}),
      };
      await this.cluster.report({
        op: "vm.snapshot.add",
        name,
        node: this.nodeName,
        snapshot: record,
        at: Date.now(),
      });
      return record;
    });
  }

  /** Disk snapshots of a running guest, taken between fs-freeze and fs-thaw when it has an agent. */
  private async diskSnapshotLive(qemu: QemuVm, snap: string, disks: VmDisk[]): Promise<void> {
    const frozen = await qemu.agent.ping(1_000) && await qemu.agent.fsFreeze().then(
      () => true,
      () => false,
    );
    try {
      await internalSnapshotAll(qemu.qmp, disks.map((d) => d.id), snap, 60_000);
    } finally {
      if (frozen) await qemu.agent.fsThaw().catch(() => {});
    }
  }

  restoreSnapshot(name: string, snap: string): Promise<VmRecord> {
    return this.serialize(name, async () => {
      const vm = this.mine(name);
      const s = vm.snapshots.find((x) => x.name === snap);
      if (!s) throw new NotFoundError("snapshot", snap);
      const qemu = this.live(name);
      const display = displayOf(s);
      if (s.memory && qemu && displayOf(qemu.spec) === display) {
        await snapshotJob(qemu, "snapshot-load", snap, vm.disks);
        if ((await qemu.status()) !== "running" && s.vmState === "running") await qemu.cont();
      } else if (s.memory) {
        // A running QEMU with another display device than the snapshot's cannot load its
        // device state: it is replaced by one with the snapshot's.
        const rt = this.runtimes.get(name);
        if (qemu && rt) {
          await this.report(vm, "stopping", `restoring snapshot ${snap}`);
          await this.stopRuntime(name, rt, true);
        }
        // Resume the stopped VM at the snapshot point: desired first, so the reconcile that follows agrees.
        await this.snapshotVolumes(vm, "apply", snap);
        await this.settle(name, "running");
        await this.launch(this.mine(name), { loadvm: snap, display });
      } else {
        if (qemu) {
          throw new ConflictError(`stop ${name} before restoring a disk-only snapshot`);
        }
        await this.snapshotVolumes(vm, "apply", snap);
      }
      return this.mine(name);
    });
  }

  deleteSnapshot(name: string, snap: string): Promise<void> {
    return this.serialize(name, async () => {
      const vm = this.mine(name);
      if (!vm.snapshots.some((x) => x.name === snap)) throw new NotFoundError("snapshot", snap);
      const qemu = this.live(name);
      if (qemu) await snapshotJob(qemu, "snapshot-delete", snap, vm.disks);
      else await this.snapshotVolumes(vm, "delete", snap);
      await this.cluster.report({
        op: "vm.snapshot.remove",
        name,
        node: this.nodeName,
        snapshot: snap,
        at: Date.now(),
      });
    });
  }

  /**
   * Removes a VM's volumes from this host and its run directory: all of them
   * on deletion, or only host-local ones once it lives elsewhere (shared
   * volumes went with it). Best effort leaves stragglers rather than failing.
   */
  async removeFromHost(
    vm: VmRecord,
    opts: { keepDisks?: boolean; localOnly?: boolean; bestEffort?: boolean } = {},
  ): Promise<void> {
    for (const d of opts.keepDisks ? [] : vm.disks) {
      if (d.source.kind === "attached" && !opts.localOnly) continue; // a volume outlives its VM
      if (opts.localOnly && this.isSharedDisk(d)) continue;
      const pool = this.poolOf(d);
      let removed: Promise<void>;
      if (pool instanceof BtrfsPool) {
        // Moved away: its last sent snapshot stays, the base when it comes back; deleted: all.
        removed = (await pool.has(d.volume))
          ? pool.delete(
            d.volume,
            opts.localOnly ? await pool.lastMigrationSnapshot(d.volume) : undefined,
          )
          : opts.localOnly
          ? Promise.resolve()
          : pool.forgetSnapshots(d.volume);
      } else {
        if (!(await pool.has(d.volume))) continue;
        removed = pool.delete(d.volume);
      }
      await (opts.bestEffort ? removed.catch(() => {}) : removed);
    }
    await this.unplugNics(vm);
    await this.driver.cleanup(vm.name);
  }

  /** Applies a snapshot action to every volume of a VM whose QEMU is not running. */
  private async snapshotVolumes(
    vm: VmRecord,
    action: "create" | "apply" | "delete",
    snap: string,
  ): Promise<void> {
    for (const d of vm.disks) await this.poolOf(d).snapshot(action, d.volume, snap);
  }

  /**
   * A stopped VM's volume for cold migration: on btrfs a `btrfs send` stream from a new
   * snapshot, incremental against the newest migration snapshot the receiver also has
   * (`theirs`); null when the pool is not btrfs (then {@link exportVolume}).
   */
  async sendVolume(
    d: VmDisk,
    theirs: string[],
  ): Promise<{ stream: ReadableStream<Uint8Array>; tag: string; parent: string | null } | null> {
    const pool = this.poolOf(d);
    if (!(pool instanceof BtrfsPool)) return null;
    if (!(await pool.has(d.volume))) throw new NotFoundError("volume", d.volume);
    const parent = await pool.commonBase(d.volume, theirs);
    const tag = `${MIGRATION_TAG}${Date.now()}`;
    const { stream } = await pool.send(d.volume, tag, parent);
    log.info("sending volume with btrfs send", { volume: d.volume, tag, parent });
    return { stream, tag, parent };
  }

  /** A stopped VM's local volume as one self-contained qcow2 (backing chain flattened), for cold migration. */
  async exportVolume(d: VmDisk): Promise<Deno.FsFile> {
    const pool = this.poolOf(d);
    if (!(await pool.has(d.volume))) throw new NotFoundError("volume", d.volume);
    const tmp = join(pool.root, `.tmp-export-${crypto.randomUUID()}.qcow2`);
    await qemuImg(["convert", "-q", "-O", "qcow2", pool.pathOf(d.volume), tmp], 3_600_000);
    const file = await Deno.open(tmp);
    await Deno.remove(tmp); // the open handle keeps the data until the stream is done
    return file;
  }

  /**
   * Grows volume `volume` attached to `vmName` (placed here) to `sizeBytes`: through QMP
   * `block_resize` while its QEMU runs (the guest sees the new size at once), else the file.
   */
  resizeAttached(vmName: string, volume: string, sizeBytes: number): Promise<void> {
    return this.serialize(vmName, async () => {
      const vm = this.mine(vmName);
      const d = vm.disks.find((x) => x.source.kind === "attached" && x.volume === volume);
      if (!d) throw new NotFoundError("disk", `${vmName}/${volume}`);
      const qemu = this.live(vmName);
      if (qemu && qemu.spec.disks.some((x) => x.id === d.id)) {
        await blockResize(qemu.qmp, d.id, sizeBytes);
      } else {
        await this.poolOf(d).resize(d.volume, sizeBytes);
      }
    });
  }

  /** Test and operator aid: the pid of a VM's QEMU on this host. */
  pidOf(name: string): number | null {
    return this.live(name)?.pid ?? null;
  }
}

/**
 * Runs a QMP snapshot job (save/load/delete internal snapshots, memory in
 * the root disk) and waits for it to conclude; the VM stays consistent because
 * QEMU pauses it for the duration.
 */
async function snapshotJob(
  qemu: QemuVm,
  command: "snapshot-save" | "snapshot-load" | "snapshot-delete",
  tag: string,
  disks: VmDisk[],
): Promise<void> {
  const jobId = `${command}-${crypto.randomUUID().slice(0, 8)}`;
  const devices = disks.map((d) => d.id);
  const vmstate = command === "snapshot-delete" ? undefined : disks[0].id;
  await startSnapshotJob(qemu.qmp, command, jobId, tag, devices, vmstate);
  const deadline = Date.now() + 300_000;
  for (;;) {
    const jobs = await queryJobs(qemu.qmp);
    const job = jobs.find((j) => j.id === jobId);
    if (!job || job.status === "concluded" || job.status === "null") {
      if (job) await jobDismiss(qemu.qmp, jobId).catch(() => {});
      if (job?.error) throw new ConflictError(`${command} ${tag}: ${job.error}`);
      return;
    }
    if (Date.now() > deadline) {
      await jobCancel(qemu.qmp, jobId).catch(() => {});
      throw new ConflictError(`${command} ${tag} did not finish in 5 minutes`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The built-in pools as records, for a cluster view that has no pool records (older callers). */
function builtinPool(cluster: HostCluster, name: string): PoolRecord | null {
  const base = { source: null, node: null, loop: null, builtin: true, createdAt: 0, by: "system" };
  if (name === "dir") return { ...base, name, driver: "dir" };
  const shared = cluster.config()["storage.sharedDir"];
  if (name === "shared" && shared) return { ...base, name, driver: "shared-dir", source: shared };
  return null;
}

/** A stable locally administered MAC derived from the VM's uuid (its user-mode NIC). */
export function macFor(uuid: string): string {
  const hex = uuid.replace(/-/g, "");
  const bytes = [0x52, 0x54, 0x00, ...[0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16))];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}
