/**
 * `novactl node start`: runs this process as a cluster member — bootstraps a
 * new cluster, joins one with a token, or restarts with the identity in the
 * data dir — and serves the REST API and peer traffic on --listen.
 */
import { Upgrader } from "../core/upgrade/mod.ts";
import { assertDataDirUsable } from "../core/upgrade/data_dir.ts";
import { createApp } from "../api/mod.ts";
import { type BackupCluster, BackupRunner, removeBackupFiles } from "../host/backup/mod.ts";
import type { OperationCluster } from "../host/operations/mod.ts";
import { SnapshotRunner } from "../host/snapshots/mod.ts";
import { BackupScheduler } from "../core/cluster/backup_scheduler.ts";
import { zodToValidationError } from "../api/errors.ts";
import { labelsSchema } from "../core/fsm/command_schemas.ts";
import type { Inventory } from "../core/fsm/mod.ts";
import {
  ADMIN_TOKEN_FILE,
  auditSystem,
  bootstrapCluster,
  ClusterNode,
  collectInventory,
  delay,
  exportClusterMetrics,
  FENCE_MARGIN_MS,
  HaManager,
  inventoryChanged,
  joinCluster,
  keepImagesReplicated,
  keepLeaseRenewed,
  LeaseHolder,
  LeaseTable,
  migratorPeer,
  pullImage,
  readIdentity,
  type Readiness,
  readinessOf,
  readinessStatus,
  Rebalancer,
  ReportBatcher,
  submitToLeader,
} from "../core/cluster/mod.ts";
import { NovaError, ValidationError } from "../core/errors/mod.ts";
import {
  type NodeIdentity,
  secureDataDir,
  writeFileDurably,
  writeIdentity,
} from "../core/store/mod.ts";
import { keepHeapWithinBudget, keepMemoryTrimmed } from "../core/memory/mod.ts";
import { flushLogs, log, setLogContext } from "../core/log/mod.ts";
import { metrics } from "../core/metrics/mod.ts";
import { join } from "node:path";
import { BlobStore, DirPool, findOrphans, sweepDataDir } from "../host/storage/mod.ts";
import { type Accel, hostAccel, nodeTlsPaths, QemuDriver } from "../host/kvm/mod.ts";
import {
  type HostCluster,
  Migrator,
  SIMULATED_SUFFIX,
  SimulatedFencing,
  type SimulatedHardware,
  SimulatedHost,
  VmHost,
} from "../host/mod.ts";
import { HostFencing } from "../host/fencing/mod.ts";
import { SystemdNotifier } from "../host/systemd/mod.ts";
import { hostMetrics, intervalFromEnv } from "../host/metrics/mod.ts";
import { AlertManager, latestSamplesOf, samplesSource } from "../core/cluster/alerts.ts";
import {
  type CentralEndpoint,
  type CentralPlan,
  type CentralPorts,
  centralRemotes,
  ChassisCleaner,
  type ChassisSource,
  DEFAULT_CENTRAL_PORTS,
  HostNetwork,
  NorthboundReconciler,
  placedPorts,
  retireCentralMember,
  routerInputs,
  tunnelAddress,
} from "../host/ovs/mod.ts";
import { qemuUser } from "../host/kvm/mod.ts";
import { ApiServer } from "../api/server.ts";
import {
  assertNoRewriteRunning,
  assertRestorableDataDir,
  readBackup,
  restoreDataDir,
} from "../core/recovery/mod.ts";
import { CA_CERT_FILE, fingerprint, loadNodeTls, NODE_CERT_FILE } from "../core/pki/mod.ts";

export interface NodeStartOptions {
  name: string;
  dataDir: string;
  listen: string;
  advertise?: string;
  join?: string;
  token?: string;
  /** A file holding the join token (kept out of argv, where `ps` shows it). */
  tokenFile?: string;
  /** `--restore FILE`: a new one-node cluster from a cluster backup (core/recovery/restore.ts). */
  restore?: string;
  /** Serve plain HTTP (loopback only); peers then authenticate with per-node credentials. */
  insecureHttp?: boolean;
  label: Record<string, string>;
  /** SIMULATION: no QEMU; VMs are reported as converged, the inventory is this (host/simulated_host.ts). */
  simulatedHost?: SimulatedHardware;
  /** Run the host's OVS/OVN (default); off with `--networking off` and on simulated hosts. */
  networking?: boolean;
  /** `--tunnel-interface`: the overlay's tunnel endpoint is this interface's IPv4 address. */
  tunnelInterface?: string;
  /** `--ovn-ports`: this host's OVN central member ports (default 6641-6644). */
  ovnPorts?: CentralPorts;
  /** `--grpc-port`: serve the gRPC API on this port of the listen host (0: any); absent: off. */
  grpcPort?: number;
}

/** Where a node reports the address it bound (`--listen HOST:0` picks a free port). */
export const LISTEN_FILE = "listen.json";

/** Contents of `DATA_DIR/listen.json`. */
export interface ListenReport {
  /** Advertised base URL, with the bound port. */
  url: string;
  /** `host:port` actually bound. */
  listen: string;
  pid: number;
  /** `host:port` the gRPC API is served on (`--grpc-port`); absent when off. */
  grpc?: string;
}

/** HOST:PORT; port 0 asks the kernel for a free port. */
export function parseListen(listen: string): { hostname: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || !(port >= 0 && port < 65536)) {
    throw ValidationError.field("listen", `"${listen}" is not HOST:PORT`);
  }
  return { hostname: m[1].replace(/^\[|\]$/g, ""), port };
}

/**
 * The port a restarted node bound last time (its `listen.json`), else the one its advertised
 * URL names: members know the node by that URL, so `--listen HOST:0` must not move it.
 */
async function portUsedBefore(dataDir: string, identity: NodeIdentity | null): Promise<number> {
  try {
    const last = JSON.parse(await Deno.readTextFile(join(dataDir, LISTEN_FILE))) as ListenReport;
    return parseListen(last.listen).port;
  } catch {
    return identity ? Number(new URL(identity.url).port) || 0 : 0;
  }
}

function listenUrl(hostname: string, port: number, insecure: boolean): string {
  const scheme = insecure ? "http" : "https";
  return `${scheme}://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
}

/** Plain HTTP is for development on one machine: a loopback listen address only. */
export function assertInsecureAllowed(hostname: string): void {
  const loopback = hostname === "localhost" || hostname === "::1" ||
    /^127\.\d+\.\d+\.\d+$/.test(hostname);
  if (!loopback) {
    throw ValidationError.field(
      "insecure-http",
      `--insecure-http serves plain HTTP and is allowed only on a loopback --listen address, not ${hostname}`,
    );
  }
}

/** The join token: --token, else --token-file, else env NOVACTL_JOIN_TOKEN. */
async function joinToken(opts: NodeStartOptions): Promise<string | undefined> {
  if (opts.token) return opts.token.trim();
  if (opts.tokenFile) {
    try {
      return (await Deno.readTextFile(opts.tokenFile)).trim().split("\n").pop()!.trim();
    } catch (err) {
      throw ValidationError.field(
        "token-file",
        `cannot read ${opts.tokenFile}: ${(err as Error).message}`,
      );
    }
  }
  return Deno.env.get("NOVACTL_JOIN_TOKEN")?.trim() || undefined;
}

/** A member running in this process: `node start` runs one, `node simulate-hosts` many. */
export interface RunningMember {
  readonly name: string;
  readonly url: string;
  /** Hands off leadership, stops every loop, closes the listener and the databases. */
  stop(reason: string): Promise<void>;
  /** Resolves once the member has stopped (asked to, or removed from its cluster). */
  readonly finished: Promise<void>;
  /** What `/readyz` answers now (core/cluster/readiness.ts). */
  readiness(): Readiness;
}

export async function startNode(opts: NodeStartOptions): Promise<void> {
  setLogContext({ node: opts.name });
  // Read (and unset) before anything is spawned; refused now if it cannot be used.
  const systemd = SystemdNotifier.fromEnv();
  await systemd?.notify({ STATUS: opts.join ? `joining ${opts.join}` : "starting" })
    .catch((err) => log.warn("notifying systemd failed", { error: String(err) }));
  const member = await openMember(opts);
  const readiness = systemd ? tellSystemdWhenReady(member, systemd) : null;
  let toldStopping: Promise<void> | undefined;
  const stopping = (reason: string) => {
    readiness?.stop();
    return toldStopping ??= systemd?.notify({ STOPPING: "1", STATUS: `stopping (${reason})` })
      .catch((err) => log.warn("notifying systemd failed", { error: String(err) }));
  };
  const stopTrimming = keepMemoryTrimmed();
  const stopCollecting = keepHeapWithinBudget({
    onCollect: (c) => {
      metrics.forcedGcSeconds.observe(c.pauseMs / 1000);
      log.debug("over the resident budget: garbage collected", {
        pauseMs: Math.round(c.pauseMs),
        heapBeforeMiB: Math.round(c.heapBeforeBytes / 2 ** 20),
        heapAfterMiB: Math.round(c.heapAfterBytes / 2 ** 20),
      });
    },
  });
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => {
      void stopping(signal);
      void member.stop(signal);
    });
  }
  await member.finished;
  await stopping("removed from the cluster"); // unless a signal said so already
  systemd?.close();
  stopCollecting();
  stopTrimming();
  flushLogs();
  Deno.exit(0);
}

/**
 * Tells systemd what the node waits for (STATUS=) and, once it is ready as `/readyz` means it,
 * READY=1; later changes of readiness (a lost leader) show in STATUS= only, as systemd wants.
 */
function tellSystemdWhenReady(member: RunningMember, systemd: SystemdNotifier): { stop(): void } {
  let stopped = false;
  let told = "";
  let ready = false;
  const loop = async () => {
    while (!stopped) {
      const r = member.readiness();
      const status = readinessStatus(r);
      const fields: Record<string, string> = {};
      if (r.ready && !ready) fields.READY = "1";
      if (status !== told) fields.STATUS = status;
      if (Object.keys(fields).length && !stopped) {
        try {
          await systemd.notify(fields);
          ready ||= r.ready;
          told = status;
          if (fields.READY) log.info("told systemd the node is ready", { socket: systemd.socket });
        } catch (err) {
          log.warn("notifying systemd failed", { socket: systemd.socket, error: String(err) });
        }
      }
      await delay(ready ? 1_000 : 200);
    }
  };
  void loop();
  return { stop: () => void (stopped = true) };
}

/**
 * Checks the options, then bootstraps, joins or restarts the member in `opts.dataDir` and
 * serves it on `opts.listen`. Process-wide concerns (signals, exit, memory trimming, the
 * log context) are the caller's.
 */
export async function openMember(opts: NodeStartOptions): Promise<RunningMember> {
  const { hostname, port: requestedPort } = parseListen(opts.listen);
  if (opts.insecureHttp) assertInsecureAllowed(hostname);
  opts = { ...opts, token: await joinToken(opts) };
  if (opts.join && !opts.token) {
    throw ValidationError.field(
      "token",
      "--join needs --token-file FILE (or --token, or env NOVACTL_JOIN_TOKEN)",
    );
  }
  if (opts.restore) {
    if (opts.join) {
      throw ValidationError.field("restore", "--restore builds a new cluster; drop --join");
    }
    // Both checks before anything is created: a bad file or dir leaves the data dir as it was.
    await assertRestorableDataDir(opts.dataDir);
    const backup = await readBackup(opts.restore);
    log.info("backup verified", {
      file: opts.restore,
      clusterId: backup.clusterId,
      index: backup.index,
      createdAt: backup.createdAt,
    });
  }
  // A rewrite of the data dir (cluster recover) must finish first.
  await assertNoRewriteRunning(opts.dataDir);
  // A data dir a newer release upgraded (core/upgrade/): refused before anything starts.
  assertDataDirUsable(opts.dataDir);
  // The leader refuses such labels in every registration: say so now, not in a debug log later.
  const labels = labelsSchema.safeParse(opts.label);
  if (!labels.success) throw zodToValidationError(labels.error, "label.");
  // Missing OVS/OVN packages: say which, and how to run without, before anything starts.
  if (networkingOn(opts)) {
    await HostNetwork.preflight();
    // A wrong --tunnel-interface is refused now, not after the node joined.
    if (opts.tunnelInterface) {
      await tunnelAddress(join(opts.dataDir, "ovs"), opts.tunnelInterface, "");
    }
  }
  await Deno.mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  await secureDataDir(opts.dataDir); // also when it existed with looser modes

  const identity = await readIdentity(opts.dataDir);
  // A restore on a host's old data dir keeps the port it had, as a restart does.
  const port = requestedPort ||
    (identity || opts.restore ? await portUsedBefore(opts.dataDir, identity) : 0);
  // A restarted node serves its own certificate from the first byte; a new one
  // serves a throwaway one (and 503) until bootstrap or join has made its own.
  const tls = identity ? await loadNodeTls(opts.dataDir) : null;
  const api = await ApiServer.listen({ hostname, port, insecure: !!opts.insecureHttp, tls });
  try {
    return await runMember(opts, hostname, identity, api);
  } catch (err) {
    await api.shutdown().catch(() => {});
    throw err;
  }
}

/** Who this member is: its identity from the data dir, else from joining or bootstrapping. */
async function establishIdentity(
  opts: NodeStartOptions,
  existing: NodeIdentity | null,
  url: string,
): Promise<NodeIdentity> {
  if (existing) {
    // Checked before the data dir was touched too (openMember); never restore over a node.
    if (opts.restore) {
      throw ValidationError.field("data-dir", `--restore: ${opts.dataDir} already holds a node`);
    }
    if (existing.name !== opts.name) {
      throw ValidationError.field("name", `data dir belongs to node "${existing.name}"`);
    }
    if (existing.removedAt) {
      throw new NovaError(
        "conflict",
        `this node was removed from its cluster at ${existing.removedAt}; start with a new --data-dir and --join`,
      );
    }
    log.info("restarting with existing identity", { clusterId: existing.clusterId });
    return existing.url === url ? existing : { ...existing, url };
  }
  if (opts.restore) {
    // The old OVN central member counts the old voters: start a new one (see the function).
    const ovn = await retireCentralMember(opts.dataDir, Date.now());
    if (ovn) log.info("moved the old OVN central member aside", { dir: ovn });
    const r = await restoreDataDir({
      dataDir: opts.dataDir,
      file: opts.restore,
      name: opts.name,
      url,
    });
    log.info("restored cluster from backup", {
      clusterId: r.identity.clusterId,
      backupIndex: r.backup.index,
      backupCreatedAt: r.backup.createdAt,
      index: r.index,
      removedMembers: r.removed,
      vms: r.vms,
      adminToken: r.adminTokenName,
      adminTokenFile: join(opts.dataDir, ADMIN_TOKEN_FILE),
      caFingerprint: fingerprint(await Deno.readTextFile(join(opts.dataDir, CA_CERT_FILE))),
    });
    return r.identity;
  }
  if (opts.join) {
    // A simulated host says so from its first registration, not only from its first refresh.
    const inventory = simulatedInventory(await collectInventory(opts.dataDir), opts.simulatedHost);
    const identity = await joinCluster({
      dataDir: opts.dataDir,
      name: opts.name,
      url,
      joinUrl: opts.join,
      token: opts.token!,
      inventory,
      labels: opts.label,
    });
    log.info("joined cluster", { clusterId: identity.clusterId });
    return identity;
  }
  const boot = await bootstrapCluster(opts.dataDir, opts.name, url);
  // The fingerprint is what clients check before pinning DIR/ca.crt (--ca-fingerprint).
  log.info("bootstrapped new cluster", {
    clusterId: boot.identity.clusterId,
    adminTokenFile: join(opts.dataDir, ADMIN_TOKEN_FILE),
    caFile: join(opts.dataDir, CA_CERT_FILE),
    caFingerprint: fingerprint(await Deno.readTextFile(join(opts.dataDir, CA_CERT_FILE))),
  });
  return boot.identity;
}

/** The host's fencing device: its watchdog process, or nothing to fence on a simulated host. */
function openFencing(opts: NodeStartOptions): Promise<HostFencing | SimulatedFencing> {
  return opts.simulatedHost
    ? Promise.resolve(new SimulatedFencing())
    : HostFencing.start(opts.dataDir);
}

async function runMember(
  opts: NodeStartOptions,
  hostname: string,
  existing: NodeIdentity | null,
  api: ApiServer,
): Promise<RunningMember> {
  const port = api.port;
  const url = (opts.advertise ?? listenUrl(hostname, port, !!opts.insecureHttp)).replace(/\/$/, "");
  const report: ListenReport = { url, listen: `${hostname}:${port}`, pid: Deno.pid };
  await writeFileDurably(join(opts.dataDir, LISTEN_FILE), JSON.stringify(report) + "\n");
  const identity = await establishIdentity(opts, existing, url);

  const tls = await loadNodeTls(opts.dataDir);
  if (tls.name !== identity.name) {
    throw ValidationError.field(
      "data-dir",
      `${NODE_CERT_FILE} names "${tls.name}", not "${identity.name}"`,
    );
  }
  await api.useTls(tls, identity.url);

  const swept = await sweepDataDir(opts.dataDir);
  if (swept.length) {
    log.warn("removed temporary files left by a crash", { files: swept });
    metrics.tempFilesSwept.inc(swept.length);
  }

  let stopping: Promise<void> | null = null;
  const node: ClusterNode = new ClusterNode({
    dataDir: opts.dataDir,
    identity,
    tls,
    onRemoved: () => void onRemoved(),
  });
  await secureDataDir(opts.dataDir); // the databases (and -wal/-shm) it just opened or created
  const blobs = await new BlobStore(join(opts.dataDir, "blobs")).init();
  const pool = await new DirPool(join(opts.dataDir, "pool")).init();
  const driver = await new QemuDriver(join(opts.dataDir, "vms")).init();
  // Grants count only in the term they were made in (see LeaseTable).
  const leases = new LeaseTable(() => node.isLeader() ? node.raft.basicStatus().term : null);
  // HA VMs run under the host's watchdog; a restarted node inherits the lease it fed it.
  const fencing = await openFencing(opts);
  if (fencing instanceof HostFencing) driver.fencedSpawner = fencing;
  const lease = new LeaseHolder(fencing.inheritedFenceAt() + FENCE_MARGIN_MS);
  const simulated = opts.simulatedHost ? new SimulatedHost(hostClusterOf(node, blobs)) : null;
  const network = networkingOn(opts) ? hostNetworkOf(node, opts, url) : null;
  const host = new VmHost({
    cluster: hostClusterOf(node, blobs),
    driver,
    pool,
    accel: hostAccel,
    lease: { holds: () => lease.holds() && fencing.alive() },
    nics: network,
  });
  const migrator = new Migrator(
    host,
    (peer) => node.fsm.member(peer) ? migratorPeer(node, peer) : null,
    new URL(url).hostname.replace(/^\[|\]$/g, ""),
    nodeTlsPaths(opts.dataDir),
  );
  host.migrator = migrator;
  const backups = new BackupRunner(
    backupClusterOf(node, host.cluster),
    host,
    join(opts.dataDir, "backup-operations.json"),
  );
  const snapshots = new SnapshotRunner(
    operationClusterOf(node, host.cluster),
    host,
    join(opts.dataDir, "snapshot-operations.json"),
  );
  // Simulated hosts run no QEMU: they have no metrics of their own to sample.
  const stats = simulated ? undefined : hostMetrics(host, opts.dataDir);
  const app = createApp(node, { blobs, host, leases, migrator, backups, snapshots, stats });
  api.serveWith((request, env) => app.fetch(request, env));
  // Loaded only when asked for: Connect and protobuf-es cost every CLI command ~30 ms to load.
  const grpc = opts.grpcPort === undefined ? null : await (await import("../api/grpc/mod.ts"))
    .GrpcServer.listen({
      hostname,
      port: opts.grpcPort,
      tls: opts.insecureHttp ? null : tls,
      app: (request, env) => app.fetch(request, env),
    });
  if (grpc) {
    report.grpc = `${hostname}:${grpc.port}`;
    await writeFileDurably(join(opts.dataDir, LISTEN_FILE), JSON.stringify(report) + "\n");
    log.info("gRPC API listening", { listen: report.grpc });
  }
  node.start();
  log.info("node listening", { url, listen: report.listen });

  // Before the VMs: re-adopted and new guests need their network.
  await network?.start();
  const northbound = network ? new NorthboundReconciler(northboundSourceOf(node, network)) : null;
  northbound?.start();
  const chassisCleaner = network ? new ChassisCleaner(chassisSourceOf(node, network)) : null;
  chassisCleaner?.start();
  // Loop-backed btrfs pools of this host, mounted again after a reboot (before the VMs start).
  await host.pools.mountAll();
  const registration = keepInventoryCurrent(node, opts, host, network);
  // Applied bridge mappings show in the inventory at once, not at the next refresh.
  if (network) network.onInventoryChange = () => registration.refresh();
  // So do new pools and volumes: their capacity decides the next volume's or VM's place.
  node.fsm.onChange((c) => {
    if (c === null || c.resource === "pool" || c.resource === "volume") registration.refresh();
  });
  const renewal = keepLeaseRenewed(node, lease, leases, fencing, (commitIndex) => {
    // Act on drift only once this host has seen everything the leader had committed. On a
    // simulated host the QEMU side never acts: marking it caught up would start real QEMUs
    // for the VMs placed there (it did, on a restart with VMs in place).
    if (!simulated && !host.isCaughtUp()) {
      node.waitApplied(commitIndex, 30_000).then(() => host.markCaughtUp(), () => {});
    }
  });
  fencing.onLost(() => renewal.fencingLost());
  const replication = keepImagesReplicated(node, blobs);
  void reportOrphansOnceCaughtUp(node, pool, blobs);
  const ha = new HaManager(node, leases);
  ha.start();
  const stopClusterMetrics = exportClusterMetrics(node);
  const rebalancer = new Rebalancer(node);
  rebalancer.start();
  const upgrader = new Upgrader(node);
  upgrader.start();
  const backupScheduler = new BackupScheduler(node, async (b) => {
    const t = node.fsm.backups.target(b.target);
    if (t) await removeBackupFiles(t.path, b);
  });
  backupScheduler.start();
  // Alert rules, evaluated by the leader every sampling interval (core/cluster/alerts.ts).
  const alerting = new AlertManager(node, {
    intervalMs: intervalFromEnv(),
    samples: samplesSource(
      node.id,
      stats ? () => latestSamplesOf(stats) : null,
      (peer) => node.fsm.member(peer) ? migratorPeer(node, peer) : null,
    ),
  });
  alerting.start();
  if (!simulated) await backups.start();
  await snapshots.start();
  if (simulated) simulated.start();
  else await host.start();
  stats?.start();

  async function shutdown(reason: string): Promise<void> {
    log.info("shutting down", { node: identity.name, reason });
    await node.handOffLeadership();
    registration.stop();
    renewal.stop();
    replication.stop();
    ha.stop();
    stopClusterMetrics();
    rebalancer.stop();
    upgrader.stop();
    backupScheduler.stop();
    alerting.stop();
    backups.stop();
    snapshots.stop();
    northbound?.stop();
    chassisCleaner?.stop();
    network?.stop();
    host.stop();
    await stats?.stop();
    simulated?.stop();
    fencing.close();
    await grpc?.close().catch(() => {});
    await api.shutdown().catch(() => {});
    await node.stop();
  }
  const stop = (reason: string) => stopping ??= shutdown(reason);

  async function onRemoved(): Promise<void> {
    await writeIdentity(opts.dataDir, { ...identity, removedAt: new Date().toISOString() });
    await network?.retire().catch((err) =>
      log.warn("stopping ovn-controller of a removed node failed", { error: String(err) })
    );
    await stop("removed");
  }

  return {
    name: identity.name,
    url,
    stop,
    finished: api.finished.then(() => stopping ?? undefined),
    readiness: () => readinessOf(node),
  };
}

const SIMULATED_DISK_GIB = 2 ** 20;

/** A simulated host's inventory: its flags' hardware, marked as simulated. */
function simulatedInventory<T extends Inventory>(real: T, sim: SimulatedHardware | undefined): T {
  if (!sim) return real;
  return {
    ...real,
    cpus: sim.cpus,
    memoryMiB: sim.memoryMiB,
    // Simulated VMs write no disk: what they hold is bookkeeping only (1 PiB of it).
    diskGiB: SIMULATED_DISK_GIB,
    diskFreeGiB: SIMULATED_DISK_GIB,
    // It runs no guest: nothing to probe.
    accel: "tcg",
    version: `${real.version}${SIMULATED_SUFFIX}`,
  };
}

/**
 * Registers this host's inventory in cluster state on start and refreshes it
 * periodically. The first registration does not wait for the accelerator probe
 * (seconds): it says `accel: null`, which the scheduler reads as "probing", and
 * the host registers again as soon as the probe has decided.
 */
function keepInventoryCurrent(
  node: ClusterNode,
  opts: NodeStartOptions,
  host: VmHost,
  network: HostNetwork | null,
): { stop(): void; refresh(): void } {
  let stopped = false;
  let wake = false;
  let accel: Accel | null = null;
  // A simulated host runs no guest: nothing to probe, it says TCG.
  const probed = opts.simulatedHost
    ? Promise.resolve(void (accel = "tcg"))
    : hostAccel().then((a) => void (accel = a));
  const loop = async () => {
    let interval = 2_000;
    while (!stopped) {
      const decided = accel;
      if (decided === null && node.fsm.node(node.id)?.inventory?.accel) {
        // A restart: the record holds the decision of an earlier probe on this same
        // hardware. Keep it rather than turn the host "probing" (and unready) for seconds.
        await probed;
        continue;
      }
      try {
        const inventory = simulatedInventory({
          ...await collectInventory(opts.dataDir),
          accel: decided,
          ...await storageInventory(host),
          ...(network ? { network: network.inventory() } : {}),
        }, opts.simulatedHost);
        const current = node.fsm.node(node.id);
        const labels = current && Object.keys(opts.label).length === 0
          ? current.labels
          : opts.label;
        const unchanged = current?.url === node.identity.url &&
          JSON.stringify(current.labels) === JSON.stringify(labels) &&
          !inventoryChanged(current.inventory, inventory);
        if (!unchanged) {
          await submitToLeader(node, {
            op: "node.upsert",
            name: node.id,
            url: node.identity.url,
            inventory,
            labels,
            at: Date.now(),
          });
        }
        interval = node.fsm.config().config["nodes.inventoryRefreshMs"];
        if (decided === null) await probed; // then register the decision at once
        if (decided === null) continue;
      } catch (err) {
        log.debug("inventory registration deferred", { error: String(err) });
        interval = decided === null ? 250 : 2_000;
      }
      const until = Date.now() + interval;
      while (!stopped && !wake && Date.now() < until) await delay(250);
      wake = false;
    }
  };
  loop();
  return { stop: () => (stopped = true), refresh: () => (wake = true) };
}

/** The inventory's storage part: the `dir` pool as before pools, and every pool of this host. */
async function storageInventory(host: VmHost): Promise<Pick<Inventory, "pool" | "pools">> {
  const { totalBytes: _, ...pool } = await host.pool.usage();
  return { pool, pools: await host.pools.usage() };
}

/**
 * Logs and exports (novactl_storage_orphaned_files) the volumes and blobs no VM or
 * image refers to, once this node's replica has caught up with the leader: a
 * replica that is behind would call everything created meanwhile an orphan.
 */
async function reportOrphansOnceCaughtUp(
  node: ClusterNode,
  pool: DirPool,
  blobs: BlobStore,
): Promise<void> {
  try {
    await caughtUp(node);
    const orphans = await findOrphans(pool, blobs, node.fsm);
    metrics.orphanedFiles.set({ kind: "volume" }, orphans.volumes.length);
    metrics.orphanedFiles.set({ kind: "blob" }, orphans.blobs.length);
    if (orphans.volumes.length || orphans.blobs.length) {
      log.warn("files no VM or image refers to (kept; delete them by hand if unneeded)", {
        volumes: orphans.volumes.map((v) => pool.pathOf(v)),
        blobs: orphans.blobs.map((b) => blobs.path(b)),
      });
    }
  } catch (err) {
    log.warn("orphan check failed", { error: String(err) });
  }
}

/** Resolves once a leader is known and everything this node knows committed is applied. */
async function caughtUp(node: ClusterNode): Promise<void> {
  for (;;) {
    const s = node.raft.status();
    if (s.lead && s.commit > 0 && node.fsm.appliedIndex() >= s.commit) return;
    await delay(500);
  }
}

/** What the backup runner reads and proposes: the local replica, reports as the host's. */
function backupClusterOf(node: ClusterNode, host: HostCluster): BackupCluster {
  return {
    ...operationClusterOf(node, host),
    backups: node.fsm.backups,
    vm: (name) => node.fsm.vm(name),
  };
}

/** What a host's operation runner reads and proposes: the local replica, reports as the host's. */
function operationClusterOf(node: ClusterNode, host: HostCluster): OperationCluster {
  return {
    nodeName: node.id,
    operations: () => node.fsm.runningOperations(),
    operation: (id) => node.fsm.operation(id),
    onOperationChange: (listener) =>
      node.fsm.onChange((c) => {
        if (c === null) listener(null);
        else if (c.resource === "operation" && c.name !== undefined) listener(c.name);
      }),
    report: (command) => host.report(command),
    audit: host.audit,
  };
}

/** The host's view of the cluster: committed state from the local replica, reports through the leader. */
function hostClusterOf(node: ClusterNode, blobs: BlobStore): HostCluster {
  const reports = new ReportBatcher(node);
  return {
    nodeName: node.id,
    vm: (name) => node.fsm.vm(name),
    vmsHere: () => node.fsm.listVms({ node: node.id }),
    image: (name) => node.fsm.image(name),
    operation: (id) => node.fsm.operation(id),
    config: () => node.fsm.settings(),
    level: () => node.fsm.clusterLevel(),
    onVmChange: (listener) => node.fsm.onVmChange(listener),
    report: (command, opts) => reports.submit(command, opts),
    audit: (action, resource, detail) => auditSystem(node, action, resource, detail),
    pool: (name) => node.fsm.pools.get(name),
    pools: () => node.fsm.pools.all(),
    pullImage: async (name) => {
      const image = node.fsm.image(name);
      await pullImage(node, blobs, name);
      const path = (b?: { sha256: string }) => b ? blobs.path(b.sha256) : undefined;
      return { kernel: path(image?.kernel), initrd: path(image?.initrd), disk: path(image?.disk) };
    },
  };
}

function networkingOn(opts: NodeStartOptions): boolean {
  return opts.networking !== false && !opts.simulatedHost;
}

/** This host's networking, following the cluster's voters and configuration. */
function hostNetworkOf(node: ClusterNode, opts: NodeStartOptions, url: string): HostNetwork {
  const advertised = new URL(url).hostname.replace(/^\[|\]$/g, "");
  const self: CentralEndpoint = {
    address: advertised,
    ports: opts.ovnPorts ?? DEFAULT_CENTRAL_PORTS,
  };
  return new HostNetwork({
    dataDir: opts.dataDir,
    name: opts.name,
    advertised,
    tunnelInterface: opts.tunnelInterface,
    central: self,
    plan: () => centralPlan(node, self),
    bridgeMappings: () => node.fsm.bridgeMappings(opts.name),
    tapOwner: async () => (await qemuUser())?.uid ?? null,
  });
}

/**
 * Where OVN central is now: the configured external OVN, else a member on
 * every voter that has networking on (known from its inventory; this host's
 * own from itself, before its inventory is in).
 */
function centralPlan(node: ClusterNode, self: CentralEndpoint): CentralPlan {
  const cfg = node.fsm.settings();
  if (cfg["network.ovn.northbound"] || cfg["network.ovn.southbound"]) {
    return { southbound: cfg["network.ovn.southbound"], runCentral: false, peers: [] };
  }
  const voters = node.fsm.members().filter((m) => m.role === "voter");
  const runCentral = voters.some((v) => v.name === node.id);
  const peers = voters.filter((v) => v.name !== node.id)
    .map((v) => node.fsm.node(v.name)?.inventory?.network?.central)
    .filter((c): c is CentralEndpoint => !!c);
  const members = runCentral ? [self, ...peers] : peers;
  return { southbound: centralRemotes(members, "sb"), runCentral, peers };
}

/** What the leader's cleaner of removed nodes' chassis reads (host/ovs/southbound_chassis.ts). */
function chassisSourceOf(node: ClusterNode, network: HostNetwork): ChassisSource {
  return {
    isLeader: () => node.isLeader(),
    members: () => node.fsm.members().map((m) => m.name),
    removedMembers: () => node.fsm.removedMembers(),
    // The configured external southbound, else the embedded one on the voters.
    southbound: () => centralPlan(node, network.opts.central).southbound,
    onChange: (listener) => node.fsm.onChange((c) => listener(c?.resource ?? null)),
  };
}

/** What the leader's northbound pass reads: the applied networks and NICs, and where NB is. */
function northboundSourceOf(node: ClusterNode, network: HostNetwork) {
  return {
    isLeader: () => node.isLeader(),
    networks: () => node.fsm.networks(),
    nics: (name: string) => placedPorts(node.fsm, name),
    securityGroups: () => {
      const sg = node.fsm.securityGroups;
      const rules = Map.groupBy(sg.rules(null), (r) => r.group);
      const members = Map.groupBy(sg.members(null), (m) => m.group);
      return sg.all().map((g) => ({
        name: g.name,
        rules: rules.get(g.name) ?? [],
        members: members.get(g.name) ?? [],
      }));
    },
    routers: () => routerInputs(node.fsm),
    onChange: (listener: (resource: string | null) => void) =>
      node.fsm.onChange((c) => listener(c?.resource ?? null)),
    northbound: () => {
      const external = node.fsm.settings()["network.ovn.northbound"];
      if (external) return external;
      const plan = centralPlan(node, network.opts.central);
      const members = plan.runCentral ? [network.opts.central, ...plan.peers] : plan.peers;
      return centralRemotes(members, "nb");
    },
  };
}
