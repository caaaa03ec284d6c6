/**
 * Migration of a VM between hosts, run by the source host.
 *
 * Live: the destination starts the VM's QEMU waiting for an incoming stream
 * (local disks as blank volumes exported over NBD), the source mirrors local
 * disks into them, then streams RAM and device state. When QEMU reports the
 * migration complete the source is paused; only then is the move committed
 * through Raft (`vm.migrated`), and only after that commit does the
 * destination resume. Any failure or abort before the commit leaves the VM
 * running on the source and removes what the destination created.
 *
 * Cold (stopped VM): local volumes are copied to the destination, the move
 * is committed, the source's copies are deleted. Shared disks never move.
 */
import type { OperationRecord, VmRecord } from "../core/fsm/mod.ts";
import { ConflictError, NovaError } from "../core/errors/mod.ts";
import { log } from "../core/log/mod.ts";
import { writeFileDurably } from "../core/store/mod.ts";
import {
  cancelMirrors,
  exportDisksForMirror,
  listenForMigration,
  migrateMemory,
  type MigrationProgress,
  mirrorDisks,
  resumeIncoming,
  setUpIncomingTls,
  setUpOutgoingTls,
  stopAndCopy,
  stopDiskExports,
} from "./kvm/migration.ts";
import { queryVersion } from "./kvm/commands.ts";
import type { NodeTlsPaths } from "./kvm/tls.ts";
import { type Display, displayOf, type QmpEvent, readConsole } from "./kvm/mod.ts";
import type { VmHost } from "./vm_host.ts";
import { type OperationOutcome, reportOutcome } from "./operations/mod.ts";
import { BtrfsPool } from "./storage/mod.ts";

export interface MigrationPeer {
  url: string;
  /** fetch as this node: signed over https, the node's credential over http (core/peer/client.ts). */
  fetch: (url: string, init?: RequestInit) => Promise<Response>;
  /** Address QEMU on the source uses to reach the destination. */
  address: string;
}

export interface IncomingEndpoints {
  address: string;
  migrationPort: number;
  nbdPort: number | null;
}

const PROGRESS_EVERY_MS = 500;

export class Migrator {
  private readonly running = new Map<string, AbortController>();

  constructor(
    private readonly host: VmHost,
    private readonly peerOf: (node: string) => MigrationPeer | null,
    /** The node's advertised address (its URL's host): the only address QEMU listens on. */
    private readonly selfAddress: string,
    /** The node's cluster certificate files: migration and NBD are TLS with them, both ways. */
    private readonly tls: NodeTlsPaths,
  ) {}

  isRunning(opId: string): boolean {
    return this.running.has(opId);
  }

  abort(opId: string): boolean {
    const ctl = this.running.get(opId);
    ctl?.abort();
    return !!ctl;
  }

  // ---- destination side -------------------------------------------------------

  /** Starts the VM's QEMU here waiting for the stream; returns where to send memory and disks. */
  prepareIncoming(
    vm: VmRecord,
    opId: string,
    opts: { diskPorts?: boolean; display?: Display } = {},
  ): Promise<IncomingEndpoints> {
    return this.host.serialize(vm.name, async () => {
      const old = this.host.runtimes.get(vm.name);
      if (old) await this.host.stopRuntime(vm.name, old, true); // a leftover of an earlier attempt
      const spec = await this.host.launchSpec(vm, {
        incoming: "defer",
        blankLocalDisks: true,
        diskPorts: opts.diskPorts,
        display: opts.display,
      });
      const qemu = await this.host.driver.launch(spec);
      this.host.track(vm.name, qemu, opId);
      const localDisks = vm.disks.filter((d) => !this.host.isSharedDisk(d)).map((d) => d.id);
      // Only the node the VM lives on now (the source) may send it here.
      if (!vm.node) throw new ConflictError(`${vm.name} is placed nowhere: no source to admit`);
      const tls = await setUpIncomingTls(qemu, this.tls, [vm.node]);
      // QEMU binds both ports itself (port 0) and they are read back: nothing can take them first.
      const nbdPort = localDisks.length
        ? await exportDisksForMirror(qemu, this.selfAddress, localDisks, tls)
        : null;
      const migrationPort = await listenForMigration(qemu, this.selfAddress, tls);
      // The tap is plugged (launchSpec did, before QEMU started); its port must be bound here
      // too before the switchover, or the guest's traffic stays behind until the commit.
      await this.host.waitNicsInstalled(vm);
      return { address: this.selfAddress, migrationPort, nbdPort };
    });
  }

  /**
   * After the commit: resume the guest here at once (every moment counts as
   * downtime), then stop serving disks and report once this host has applied
   * the move. Returns the resume time.
   */
  async finishIncoming(name: string): Promise<{ resumedAt: number }> {
    const rt = this.host.runtimes.get(name);
    if (!rt?.incoming) throw new ConflictError(`no incoming QEMU for ${name} here`);
    const ev = await resumeIncoming(rt.qemu, 10_000);
    rt.incoming = undefined;
    void this.host.serialize(name, async () => {
      await stopDiskExports(rt.qemu);
      for (let i = 0; i < 300 && this.host.cluster.vm(name)?.node !== this.host.nodeName; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      const vm = this.host.cluster.vm(name);
      if (vm?.node === this.host.nodeName) await this.host.report(vm, "running");
    }).catch((err) => log.warn("post-migration report failed", { vm: name, error: String(err) }));
    return { resumedAt: eventMs(ev) };
  }

  /** The migration failed before the commit: remove what was created here. */
  abortIncoming(vm: VmRecord): Promise<void> {
    return this.host.serialize(vm.name, async () => {
      const rt = this.host.runtimes.get(vm.name);
      if (rt?.incoming) await this.host.stopRuntime(vm.name, rt, true);
      await this.host.removeFromHost(vm, { localOnly: true, bestEffort: true });
    });
  }

  /** Cold migration: copies the VM's local volumes from the source host into this host's pool. */
  receiveVolumes(vm: VmRecord, from: MigrationPeer): Promise<void> {
    return this.host.serialize(vm.name, async () => {
      for (const d of vm.disks) {
        if (this.host.isSharedDisk(d)) continue;
        const pool = this.host.poolOf(d);
        // On btrfs, say which snapshots are here: the source sends only what changed since.
        const query = pool instanceof BtrfsPool
          ? `?btrfs=${encodeURIComponent((await pool.snapshots(d.volume)).join(","))}`
          : "";
        const res = await from.fetch(
          `${from.url}/internal/host/volumes/${vm.name}/${d.id}${query}`,
        );
        if (res.status === 404) {
          // Never started: the volume does not exist yet and is created here on first start.
          await res.body?.cancel();
          continue;
        }
        if (!res.ok || !res.body) {
          throw new NovaError("unavailable", `volume ${d.volume}: HTTP ${res.status}`);
        }
        const tag = res.headers.get("x-novactl-btrfs-tag");
        if (pool instanceof BtrfsPool && tag) {
          const t0 = performance.now();
          await pool.receive(d.volume, tag, res.body);
          log.info("received volume with btrfs receive", {
            volume: d.volume,
            tag,
            parent: res.headers.get("x-novactl-btrfs-parent") || null,
            ms: Math.round(performance.now() - t0),
          });
          continue;
        }
        const tmp = await Deno.makeTempFile({
          dir: this.host.poolOf(d).root,
          prefix: ".tmp-recv-",
        });
        try {
          await res.body.pipeTo((await Deno.open(tmp, { write: true })).writable);
          const pool = this.host.poolOf(d);
          if (await pool.has(d.volume)) await pool.delete(d.volume);
          await pool.importFile(tmp, d.volume);
        } finally {
          await Deno.remove(tmp).catch(() => {});
        }
      }
    });
  }

  // ---- source side ------------------------------------------------------------

  /** Runs the migration recorded in `op` for `vm` (placed here); reports progress and outcome. */
  async run(vm: VmRecord, op: OperationRecord): Promise<void> {
    if (this.running.has(op.id)) return;
    const ctl = new AbortController();
    this.running.set(op.id, ctl);
    const to = String(op.params.to);
    const started = performance.now();
    try {
      const peer = this.peerOf(to);
      if (!peer) throw new ConflictError(`destination ${to} is not a member`);
      const result = await this.host.serialize(vm.name, async () => {
        const qemu = this.host.live(vm.name);
        return qemu
          ? await this.live(this.host.mine(vm.name), op, peer, ctl.signal)
          : await this.cold(this.host.mine(vm.name), op, peer);
      });
      await this.finishOperation(op.id, "succeeded", {
        ...result,
        wallMs: Math.round(performance.now() - started),
      });
      log.info("migration finished", { vm: vm.name, to, ...result });
    } catch (err) {
      const aborted = ctl.signal.aborted;
      log.warn("migration failed", { vm: vm.name, to, error: String(err), aborted });
      await this.host.cluster.report({
        op: "vm.update",
        name: vm.name,
        changes: { migration: null },
        by: `host:${this.host.nodeName}`,
        at: Date.now(),
      }).catch(() => {});
      await this.finishOperation(
        op.id,
        aborted ? "aborted" : "failed",
        null,
        String(
          (err as Error).message ?? err,
        ),
      );
    } finally {
      this.running.delete(op.id);
      this.host.schedule(vm.name);
    }
  }

  private async finishOperation(
    id: string,
    state: OperationOutcome,
    result: Record<string, unknown> | null,
    error?: string,
  ): Promise<void> {
    await reportOutcome(this.host.cluster, id, state, result, error);
  }

  private progressReporter(opId: string): (p: MigrationProgress) => void {
    let last = 0;
    return (p) => {
      if (Date.now() - last < PROGRESS_EVERY_MS) return;
      last = Date.now();
      this.host.cluster.report({ op: "operation.update", id: opId, progress: { ...p }, at: last })
        .catch(() => {});
    };
  }

  private async live(
    vm: VmRecord,
    op: OperationRecord,
    peer: MigrationPeer,
    signal: AbortSignal,
  ): Promise<Record<string, unknown>> {
    const source = this.host.live(vm.name)!;
    const to = String(op.params.to);
    const cfg = this.host.cluster.config();
    await this.host.report(vm, "migrating");
    const onProgress = this.progressReporter(op.id);
    const localDisks = vm.disks.filter((d) => !this.host.isSharedDisk(d)).map((d) => d.id);
    let dest: IncomingEndpoints | null = null;
    let committed = false;
    try {
      // Before asking the destination for anything: without certificates nothing moves.
      const tlsCreds = await setUpOutgoingTls(source, this.tls);
      dest = await this.callPeer<IncomingEndpoints>(peer, op.id, "prepare", {
        vm: vm.name,
        diskPorts: source.spec.diskPorts === true,
        display: displayOf(source.spec),
      });
      if (localDisks.length) {
        await mirrorDisks(
          source,
          { host: dest.address, port: dest.nbdPort! },
          localDisks,
          tlsCreds,
          onProgress,
          signal,
        );
      }
      const stopped = source.qmp.waitForEvent("STOP", { timeoutMs: cfg["migration.timeoutMs"] });
      stopped.catch(() => {});
      const mem = await migrateMemory(
        source,
        { host: dest.address, port: dest.migrationPort },
        tlsCreds,
        {
          downtimeLimitMs: cfg["migration.downtimeLimitMs"],
          bandwidthBytesPerSec: cfg["migration.maxBandwidthMiBs"] * 2 ** 20,
          timeoutMs: cfg["migration.timeoutMs"],
          stopFirst: stopAndCopy(
            cfg["migration.stopAndCopy"],
            source.spec.accel,
            await queryVersion(source.qmp),
          ),
        },
        onProgress,
        signal,
      );
      const pausedAt = eventMs(await stopped);
      const tDone = performance.now();
      onProgress({ phase: "switchover", percent: 100, transferredBytes: 0, totalBytes: 0 });
      // Committed is enough (no waiting for the local replica): the guest waits for every millisecond.
      await this.commitMove(vm.name, to, op.id, false);
      committed = true;
      const tCommitted = performance.now();
      const { resumedAt } = await this.callPeer<{ resumedAt: number }>(peer, op.id, "finish", {
        vm: vm.name,
      });
      const tResumed = performance.now();
      await this.handOverConsole(vm.name, peer, op.id);
      await this.retireSource(vm, localDisks);
      return {
        live: true,
        from: this.host.nodeName,
        to,
        totalMs: mem.totalMs,
        qemuDowntimeMs: mem.downtimeMs,
        guestPausedMs: Math.max(0, resumedAt - pausedAt),
        // Wall-clock (epoch ms, QEMU's event times) of the pause and the resume, to line up
        // with what else happened meanwhile (the network's switch, lost packets).
        pausedAt,
        resumedAt,
        // Where the pause went after QEMU finished: awaiting completion, the Raft commit, the resume call.
        switchover: {
          qemuCompletedMs: mem.completedAt ? Math.round(mem.completedAt - pausedAt) : null,
          noticedMs: Math.round(Date.now() - (performance.now() - tDone) - pausedAt),
          commitMs: Math.round(tCommitted - tDone),
          resumeMs: Math.round(tResumed - tCommitted),
        },
        transferredBytes: mem.transferredBytes,
        disksMirrored: localDisks.length,
      };
    } catch (err) {
      if (committed) throw err; // the VM is the destination's now; nothing to roll back here
      await cancelMirrors(source, localDisks).catch(() => {});
      if ((await source.status().catch(() => "")) !== "running") {
        await source.cont().catch(() => {});
      }
      if (dest) await this.callPeer(peer, op.id, "abort", { vm: vm.name }).catch(() => {});
      await this.host.report(vm, "running");
      throw err;
    }
  }

  /** The console history moves with the VM (best effort: the guest is already running there). */
  private async handOverConsole(name: string, peer: MigrationPeer, opId: string): Promise<void> {
    try {
      const maxBytes = this.host.cluster.config()["vms.consoleMaxBytes"];
      const history = await readConsole(this.host.driver.paths(name).console, maxBytes);
      const res = await peer.fetch(
        `${peer.url}/internal/host/migrations/${opId}/console?vm=${name}`,
        {
          method: "POST",
          headers: { "content-type": "application/octet-stream" },
          body: history,
          signal: AbortSignal.timeout(30_000),
        },
      );
      await res.body?.cancel();
    } catch (err) {
      log.warn("console history not handed over", { vm: name, error: String(err) });
    }
  }

  /** Destination: keeps the source's console history as the older part of this VM's log. */
  async receiveConsole(name: string, history: Uint8Array): Promise<void> {
    await writeFileDurably(this.host.driver.paths(name).console + ".1", history);
  }

  /** The point of no return: the cluster records that the VM now lives on `to`. */
  private async commitMove(name: string, to: string, opId: string, readOwnWrite: boolean) {
    await this.host.cluster.report({
      op: "vm.migrated",
      name,
      from: this.host.nodeName,
      to,
      opId,
      at: Date.now(),
    }, { readOwnWrite });
  }

  /** After the switchover the source copy is stale: quit its QEMU and drop its local volumes. */
  private async retireSource(vm: VmRecord, localDisks: string[]): Promise<void> {
    const rt = this.host.runtimes.get(vm.name);
    if (rt) {
      await cancelMirrors(rt.qemu, localDisks).catch(() => {});
      await this.host.stopRuntime(vm.name, rt, true);
    }
    await this.host.removeFromHost(vm, { localOnly: true, bestEffort: true });
  }

  private async cold(
    vm: VmRecord,
    op: OperationRecord,
    peer: MigrationPeer,
  ): Promise<Record<string, unknown>> {
    const to = String(op.params.to);
    const t0 = performance.now();
    await this.callPeer(peer, op.id, "receive", { vm: vm.name, from: this.host.nodeName });
    await this.commitMove(vm.name, to, op.id, true);
    await this.retireSource(vm, []);
    return {
      live: false,
      from: this.host.nodeName,
      to,
      totalMs: Math.round(performance.now() - t0),
    };
  }

  private async callPeer<T = unknown>(
    peer: MigrationPeer,
    opId: string,
    step: "prepare" | "finish" | "abort" | "receive",
    body: Record<string, unknown>,
  ): Promise<T> {
    const res = await peer.fetch(`${peer.url}/internal/host/migrations/${opId}/${step}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(step === "receive" ? 3_600_000 : 60_000),
    });
    const json = await res.json().catch(() => ({}));
    if (!res.ok) {
      throw new NovaError(
        "unavailable",
        `destination ${step}: ${json?.error?.message ?? res.status}`,
      );
    }
    return json as T;
  }
}

function eventMs(e: QmpEvent): number {
  return e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
}
