/**
 * Typed QMP commands: one function per command novactl sends, so argument names and reply
 * shapes live in one place (Incus's `qmp/commands.go` is the model). Started with the
 * migration, NBD and TLS commands; other callers still use `qmp.execute` directly.
 *
 * Every function takes the narrow {@link QmpExecutor}, so it works with a {@link QmpClient}
 * and with test doubles alike.
 */
import { QmpError } from "./qmp.ts";

/** What the command functions need of a QMP connection. */
export interface QmpExecutor {
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts?: { timeoutMs?: number },
  ): Promise<T>;
}

/** A TCP listen or connect address as QMP's `SocketAddress` (`inet`). */
export interface InetAddress {
  host: string;
  port: number;
}

// ---- objects: TLS credentials and authorization -----------------------------------

/**
 * `object-add` of a `tls-creds-x509` object that loads `dir` (ca-cert.pem plus
 * server-*.pem or client-*.pem, see host/kvm/tls.ts) at once. `verify-peer` is always on:
 * a server demands a client certificate signed by the CA, a client checks the server's.
 *
 * `sanity-check` off: it only vets our own certificate as it loads, and QEMU 10 refuses any
 * whose critical keyUsage lacks keyEncipherment (measured: "usage does not permit key
 * encipherment"; 7.2 loads it). A node's certificate is ECDSA P-256 with digitalSignature
 * alone (core/pki/ca.ts), as RFC 5480 has it: keyEncipherment is RSA key transport, which an
 * EC key cannot do. The peer's certificate is still checked in every handshake (chain to the
 * CA, validity, hostname; `tls-authz` for the client's name).
 */
export async function addTlsCredsX509(
  qmp: QmpExecutor,
  id: string,
  dir: string,
  endpoint: "server" | "client",
): Promise<void> {
  await qmp.execute("object-add", {
    "qom-type": "tls-creds-x509",
    id,
    dir,
    endpoint,
    "verify-peer": true,
    "sanity-check": false,
  });
}

/**
 * `object-add` of an `authz-list` that allows exactly the given client certificate
 * distinguished names (as GnuTLS prints them, e.g. `CN=n1`) and denies every other one.
 * A pattern ending in `,*` is matched as a glob (`CN=n1,*` also allows `CN=n1,O=…`).
 */
export async function addAuthzList(
  qmp: QmpExecutor,
  id: string,
  allow: string[],
): Promise<void> {
  await qmp.execute("object-add", {
    "qom-type": "authz-list",
    id,
    policy: "deny",
    rules: allow.map((match) => ({
      match,
      policy: "allow",
      format: match.includes("*") ? "glob" : "exact",
    })),
  });
}

/** `object-del`; an object that does not exist is not an error. */
export async function deleteObject(qmp: QmpExecutor, id: string): Promise<void> {
  await qmp.execute("object-del", { id }).catch(() => {});
}

// ---- NBD server (destination of a disk mirror) ------------------------------------

/** TLS for a listener: server credentials and who may connect. */
export interface ListenerTls {
  creds: string;
  authz: string;
}

/** `nbd-server-start` on `addr` (port 0: QEMU picks); with TLS only certified clients get in. */
export async function nbdServerStart(
  qmp: QmpExecutor,
  addr: InetAddress,
  tls: ListenerTls | null,
): Promise<void> {
  await qmp.execute("nbd-server-start", {
    addr: { type: "inet", data: { host: addr.host, port: String(addr.port) } },
    ...(tls ? { "tls-creds": tls.creds, "tls-authz": tls.authz } : {}),
  });
}

/** `nbd-server-stop`; a server that is not running is not an error. */
export async function nbdServerStop(qmp: QmpExecutor): Promise<void> {
  await qmp.execute("nbd-server-stop").catch(() => {});
}

/** `block-export-add` of block node `nodeName` as NBD export `name`. */
export async function blockExportAddNbd(
  qmp: QmpExecutor,
  id: string,
  nodeName: string,
  name: string,
  writable: boolean,
): Promise<void> {
  await qmp.execute("block-export-add", {
    type: "nbd",
    id,
    "node-name": nodeName,
    name,
    writable,
  });
}

// ---- block nodes and jobs (source of a disk mirror) -----------------------------------

/** `blockdev-add` of an NBD client node; with `tlsCreds` the server's certificate is checked. */
export async function blockdevAddNbd(
  qmp: QmpExecutor,
  nodeName: string,
  server: InetAddress,
  exportName: string,
  tls: { creds: string; hostname: string } | null,
): Promise<void> {
  await qmp.execute("blockdev-add", {
    driver: "nbd",
    "node-name": nodeName,
    server: { type: "inet", host: server.host, port: String(server.port) },
    export: exportName,
    ...(tls ? { "tls-creds": tls.creds, "tls-hostname": tls.hostname } : {}),
  });
}

/** `blockdev-del`. */
export async function blockdevDel(qmp: QmpExecutor, nodeName: string): Promise<void> {
  await qmp.execute("blockdev-del", { "node-name": nodeName });
}

/** `blockdev-mirror` (sync=full) of `device` into block node `target`. */
export async function blockdevMirror(
  qmp: QmpExecutor,
  jobId: string,
  device: string,
  target: string,
): Promise<void> {
  await qmp.execute("blockdev-mirror", { "job-id": jobId, device, target, sync: "full" });
}

/** One entry of `query-block-jobs`. */
export interface BlockJob {
  device: string;
  len: number;
  offset: number;
  ready: boolean;
  status: string;
}

/** `query-block-jobs`. */
export function queryBlockJobs(qmp: QmpExecutor): Promise<BlockJob[]> {
  return qmp.execute<BlockJob[]>("query-block-jobs");
}

/** `block-job-cancel` with force (a ready mirror is dropped, not completed). */
export async function blockJobCancel(qmp: QmpExecutor, device: string): Promise<void> {
  await qmp.execute("block-job-cancel", { device, force: true });
}

// ---- migration ------------------------------------------------------------------------

/** `migrate-set-capabilities`. */
export async function migrateSetCapabilities(
  qmp: QmpExecutor,
  capabilities: Record<string, boolean>,
): Promise<void> {
  await qmp.execute("migrate-set-capabilities", {
    capabilities: Object.entries(capabilities).map(([capability, state]) => ({
      capability,
      state,
    })),
  });
}

/** The `migrate-set-parameters` novactl uses. */
export interface MigrateParameters {
  "downtime-limit"?: number;
  "max-bandwidth"?: number;
  /** Id of a tls-creds object: the stream is TLS (empty string: plain). */
  "tls-creds"?: string;
  /** Source: the name the destination's certificate must carry. */
  "tls-hostname"?: string;
  /** Destination: id of the authz object that decides which client certificates may send. */
  "tls-authz"?: string;
}

/** `migrate-set-parameters`. */
export async function migrateSetParameters(
  qmp: QmpExecutor,
  params: MigrateParameters,
): Promise<void> {
  await qmp.execute("migrate-set-parameters", { ...params });
}

/** `migrate-incoming` for a QEMU started with `-incoming defer`. */
export async function migrateIncoming(qmp: QmpExecutor, addr: InetAddress): Promise<void> {
  await qmp.execute("migrate-incoming", { uri: `tcp:${uriHost(addr.host)}:${addr.port}` });
}

/** `migrate` to a destination listening on `addr`. */
export async function migrate(qmp: QmpExecutor, addr: InetAddress): Promise<void> {
  await qmp.execute("migrate", { uri: `tcp:${uriHost(addr.host)}:${addr.port}` });
}

/** `query-version`: the QEMU release this process runs. */
export async function queryVersion(
  qmp: QmpExecutor,
): Promise<{ major: number; minor: number; micro: number }> {
  const r = await qmp.execute<{ qemu: { major: number; minor: number; micro: number } }>(
    "query-version",
  );
  return r.qemu;
}

/** `stop`: pauses the guest's vCPUs. */
export async function stop(qmp: QmpExecutor, timeoutMs?: number): Promise<void> {
  await qmp.execute("stop", {}, { timeoutMs });
}

/** `migrate_cancel`. */
export async function migrateCancel(qmp: QmpExecutor): Promise<void> {
  await qmp.execute("migrate_cancel");
}

/** The parts of `query-migrate` novactl reads. */
export interface MigrateInfo {
  status?: string;
  "total-time"?: number;
  downtime?: number;
  "error-desc"?: string;
  ram?: { transferred: number; total: number; remaining: number };
  /** Destination: where `migrate-incoming` listens (QEMU ≥ 4.0). */
  "socket-address"?: { type: string; host?: string; port?: string }[];
}

/** `query-migrate`. */
export function queryMigrate(qmp: QmpExecutor): Promise<MigrateInfo> {
  return qmp.execute<MigrateInfo>("query-migrate");
}

/** An IPv6 literal goes in brackets inside a migration URI. */
function uriHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

// ---- run state -------------------------------------------------------------------------

/** `query-status`: QEMU's run state ("running", "paused", "inmigrate", "postmigrate", …). */
export async function queryStatus(qmp: QmpExecutor, timeoutMs?: number): Promise<string> {
  return (await qmp.execute<{ status: string }>("query-status", {}, { timeoutMs })).status;
}

/** `cont`: resume the guest's vCPUs. */
export async function cont(qmp: QmpExecutor, timeoutMs?: number): Promise<void> {
  await qmp.execute("cont", {}, { timeoutMs });
}

/** `system_powerdown`: an ACPI power button press. */
export async function systemPowerdown(qmp: QmpExecutor, timeoutMs?: number): Promise<void> {
  await qmp.execute("system_powerdown", {}, { timeoutMs });
}

/** `quit`: QEMU exits (the reply may be lost as the socket closes). */
export async function quit(qmp: QmpExecutor, timeoutMs?: number): Promise<void> {
  await qmp.execute("quit", {}, { timeoutMs });
}

// ---- snapshots and jobs --------------------------------------------------------------

/**
 * Starts `snapshot-save`, `snapshot-load` or `snapshot-delete` as job `jobId` over the block
 * nodes `devices` (internal qcow2 snapshots; `vmstate` names the node that holds the memory).
 */
export async function snapshotJob(
  qmp: QmpExecutor,
  command: "snapshot-save" | "snapshot-load" | "snapshot-delete",
  jobId: string,
  tag: string,
  devices: string[],
  vmstate?: string,
): Promise<void> {
  await qmp.execute(command, {
    "job-id": jobId,
    tag,
    devices,
    ...(vmstate === undefined ? {} : { vmstate }),
  });
}

/** One entry of `query-jobs`. */
export interface Job {
  id: string;
  status: string;
  error?: string;
  /** Progress in the job's own unit (bytes for block jobs), out of `total-progress`. */
  "current-progress"?: number;
  "total-progress"?: number;
}

/** `query-jobs`. */
export function queryJobs(qmp: QmpExecutor): Promise<Job[]> {
  return qmp.execute<Job[]>("query-jobs");
}

/** `job-dismiss` of a concluded job. */
export async function jobDismiss(qmp: QmpExecutor, id: string): Promise<void> {
  await qmp.execute("job-dismiss", { id });
}

/** `job-cancel`. */
export async function jobCancel(qmp: QmpExecutor, id: string): Promise<void> {
  await qmp.execute("job-cancel", { id });
}

/** `block-job-set-speed`: the job's copy rate in bytes per second (0: unlimited). */
export async function blockJobSetSpeed(qmp: QmpExecutor, id: string, speed: number): Promise<void> {
  await qmp.execute("block-job-set-speed", { device: id, speed });
}

/** One `transaction` of `blockdev-snapshot-internal-sync` over `devices`: all or none. */
export async function internalSnapshotAll(
  qmp: QmpExecutor,
  devices: string[],
  name: string,
  timeoutMs?: number,
): Promise<void> {
  await qmp.execute("transaction", {
    actions: devices.map((device) => ({
      type: "blockdev-snapshot-internal-sync",
      data: { device, name },
    })),
  }, { timeoutMs });
}

// ---- device hot-plug: NICs ----------------------------------------------------------

/**
 * `netdev_add` of a tap backend on the existing tap `ifname` (made and plugged by the host,
 * host/ovs/nic.ts): no scripts, no vhost, and no virtio-net header, as on the command line
 * (host/kvm/qemu.ts says why).
 */
export async function netdevAddTap(qmp: QmpExecutor, id: string, ifname: string): Promise<void> {
  await qmp.execute("netdev_add", {
    type: "tap",
    id,
    ifname,
    script: "no",
    downscript: "no",
    vhost: false,
    vnet_hdr: false,
  });
}

/** `netdev_del`. */
export async function netdevDel(qmp: QmpExecutor, id: string): Promise<void> {
  await qmp.execute("netdev_del", { id });
}

/** `device_add` of a virtio-net NIC with `mac` on `netdev`, on the PCIe port `bus`. */
export async function deviceAddVirtioNet(
  qmp: QmpExecutor,
  id: string,
  netdev: string,
  mac: string,
  bus: string,
): Promise<void> {
  await qmp.execute("device_add", {
    driver: "virtio-net-pci",
    id,
    netdev,
    mac,
    bus,
    // No PXE option ROM, as on the command line.
    romfile: "",
  });
}

/**
 * `device_del`: asks the guest to release the device; QEMU emits `DEVICE_DELETED` once it
 * did (the guest may take its time, or never answer).
 */
export async function deviceDel(qmp: QmpExecutor, id: string): Promise<void> {
  await qmp.execute("device_del", { id });
}

/** `qom-list` of a QOM path: the names of its children and properties. */
export async function qomList(qmp: QmpExecutor, path: string): Promise<string[]> {
  return (await qmp.execute<{ name: string }[]>("qom-list", { path })).map((p) => p.name);
}

// ---- block devices: hot-plug and resize -------------------------------------------------

/**
 * `blockdev-add` of a qcow2 node `nodeName` over the file `filename` (opened by QEMU then,
 * as the user it runs as).
 */
export async function blockdevAddQcow2(
  qmp: QmpExecutor,
  nodeName: string,
  filename: string,
): Promise<void> {
  await qmp.execute("blockdev-add", {
    "node-name": nodeName,
    driver: "qcow2",
    "read-only": false,
    file: { driver: "file", filename, "read-only": false },
  });
}

/** `device_add` of a virtio-blk disk `id` on block node `drive`, on PCIe root port `bus`. */
export async function deviceAddVirtioBlk(
  qmp: QmpExecutor,
  id: string,
  drive: string,
  bus: string,
): Promise<void> {
  await qmp.execute("device_add", { driver: "virtio-blk-pci", id, drive, bus });
}

/** `block_resize`: grows block node `nodeName` to `sizeBytes` while the guest runs. */
export async function blockResize(
  qmp: QmpExecutor,
  nodeName: string,
  sizeBytes: number,
): Promise<void> {
  await qmp.execute("block_resize", { "node-name": nodeName, size: sizeBytes });
}

/** Names of the block nodes QEMU has (`query-named-block-nodes`, flat). */
export async function namedBlockNodes(qmp: QmpExecutor): Promise<string[]> {
  const nodes = await qmp.execute<{ "node-name": string }[]>("query-named-block-nodes", {
    flat: true,
  });
  return nodes.map((n) => n["node-name"]);
}

// ---- statistics (host/metrics/) ---------------------------------------------------

/** I/O counters of one disk since its QEMU started. */
export interface BlockStats {
  /** The disk's block node (novactl's disk id), or its device's id when QEMU gives no node. */
  disk: string;
  readBytes: number;
  writeBytes: number;
  readOps: number;
  writeOps: number;
}

interface BlockStatsReply {
  device?: string;
  "node-name"?: string;
  qdev?: string;
  stats: { rd_bytes: number; wr_bytes: number; rd_operations: number; wr_operations: number };
}

/**
 * `query-blockstats` of the disks attached to devices. Disks are `-blockdev`s with
 * `-device ...,drive=ID,id=ID-dev`, so the device name is empty and the node name is the id.
 */
export async function queryBlockstats(qmp: QmpExecutor): Promise<BlockStats[]> {
  const reply = await qmp.execute<BlockStatsReply[]>("query-blockstats", { "query-nodes": false });
  return reply.filter((b) => b.qdev || b.device).map((b) => ({
    disk: b["node-name"] || b.device ||
      (b.qdev ?? "").replace(/^\/machine\/peripheral\//, "").replace(/-dev\/.*$/, ""),
    readBytes: b.stats.rd_bytes,
    writeBytes: b.stats.wr_bytes,
    readOps: b.stats.rd_operations,
    writeOps: b.stats.wr_operations,
  }));
}

/**
 * The guest's memory as its balloon sets it (`query-balloon`), in bytes; null when the VM has
 * no balloon device (QEMU answers DeviceNotActive).
 */
export async function queryBalloonBytes(qmp: QmpExecutor): Promise<number | null> {
  try {
    return (await qmp.execute<{ actual: number }>("query-balloon")).actual;
  } catch (err) {
    if (err instanceof QmpError && err.errorClass === "DeviceNotActive") return null;
    throw err;
  }
}

// ---- backups: dirty bitmaps, backup jobs (host/backup/) ------------------------------

/**
 * `blockdev-add` of a `file` node on an existing (empty) file, for `blockdev-create` to format
 * as a backup job's target. `noFlush`: QEMU writes everything to the file but never syncs it
 * to disk (not even when it closes it); the caller syncs it.
 */
export async function blockdevAddFile(
  qmp: QmpExecutor,
  nodeName: string,
  filename: string,
  opts: { noFlush?: boolean } = {},
): Promise<void> {
  await qmp.execute("blockdev-add", {
    driver: "file",
    "node-name": nodeName,
    filename,
    ...(opts.noFlush ? { cache: { "no-flush": true } } : {}),
  });
}

/**
 * Starts `blockdev-create` job `jobId` formatting `fileNode` as an empty qcow2 (version 3,
 * 64 KiB clusters: what `qemu-img create -f qcow2` makes) of `size` bytes, with backing file
 * name `backingFile` (a qcow2, not opened: written into the header as given). The job stays
 * until dismissed.
 */
export async function blockdevCreateQcow2(
  qmp: QmpExecutor,
  jobId: string,
  fileNode: string,
  size: number,
  backingFile: string | null,
): Promise<void> {
  await qmp.execute("blockdev-create", {
    "job-id": jobId,
    options: {
      driver: "qcow2",
      file: fileNode,
      size,
      version: "v3",
      "cluster-size": 65536,
      ...(backingFile ? { "backing-file": backingFile, "backing-fmt": "qcow2" } : {}),
    },
  });
}

/**
 * `blockdev-add` of a qcow2 node over the existing `file` node `fileNode`, without opening
 * its backing chain (`backing: null`): a backup job's target, whose backing file (the
 * previous backup) only matters when the chain is read back. `noFlush` as in
 * {@link blockdevAddFile}.
 */
export async function blockdevAddQcow2OnNode(
  qmp: QmpExecutor,
  nodeName: string,
  fileNode: string,
  opts: { noFlush?: boolean } = {},
): Promise<void> {
  await qmp.execute("blockdev-add", {
    driver: "qcow2",
    "node-name": nodeName,
    ...(opts.noFlush ? { cache: { "no-flush": true } } : {}),
    file: fileNode,
    backing: null,
  });
}

/** A dirty bitmap on a block node as `query-named-block-nodes` shows it. */
export interface DirtyBitmap {
  name: string;
  /** Dirty bytes. */
  count: number;
  granularity: number;
  recording: boolean;
  persistent: boolean;
  /** Left "in use" by a QEMU that did not close the image: its contents cannot be trusted. */
  inconsistent?: boolean;
}

/** What `query-named-block-nodes` says of one block node. */
export interface BlockNodeInfo {
  virtualBytes: number;
  bitmaps: DirtyBitmap[];
}

/** Size and dirty bitmaps of block node `nodeName`; null when there is no such node. */
export async function blockNodeInfo(
  qmp: QmpExecutor,
  nodeName: string,
): Promise<BlockNodeInfo | null> {
  const nodes = await qmp.execute<
    {
      "node-name": string;
      image?: { "virtual-size"?: number };
      "dirty-bitmaps"?: DirtyBitmap[];
    }[]
  >("query-named-block-nodes", { flat: true });
  const n = nodes.find((x) => x["node-name"] === nodeName);
  return n
    ? { virtualBytes: n.image?.["virtual-size"] ?? 0, bitmaps: n["dirty-bitmaps"] ?? [] }
    : null;
}

/** The dirty bitmaps of block node `nodeName` (none when the node does not exist). */
export async function dirtyBitmaps(qmp: QmpExecutor, nodeName: string): Promise<DirtyBitmap[]> {
  return (await blockNodeInfo(qmp, nodeName))?.bitmaps ?? [];
}

/** `block-dirty-bitmap-remove`. */
export async function blockDirtyBitmapRemove(
  qmp: QmpExecutor,
  node: string,
  name: string,
): Promise<void> {
  await qmp.execute("block-dirty-bitmap-remove", { node, name });
}

/** One action of a `transaction`. */
export interface TransactionAction {
  type: string;
  data: Record<string, unknown>;
}

/** `block-dirty-bitmap-add` as a transaction action (persistent: stored in the qcow2 on close). */
export function bitmapAddAction(
  node: string,
  name: string,
  persistent: boolean,
): TransactionAction {
  return { type: "block-dirty-bitmap-add", data: { node, name, persistent } };
}

/**
 * A backup job's copy settings (QAPI `BackupPerf`, `x-perf` since QEMU 6.0): `useCopyRange`
 * lets the kernel copy (`copy_file_range`; QEMU falls back to read/write where it fails),
 * `maxWorkers` copy requests run at once, each up to `maxChunk` bytes (the QAPI defaults:
 * no copy offload, 64 workers, no set chunk limit). Copy-before-write requests, made when
 * the guest writes a block not copied yet, do not follow these.
 */
export interface BackupPerf {
  useCopyRange?: boolean;
  maxWorkers?: number;
  maxChunk?: number;
}

/**
 * `blockdev-backup` as a transaction action: `full` copies every block of `device` (its whole
 * backing chain) into `target`; `incremental` copies the blocks dirty in `bitmap`, which is
 * cleared on success. The job stays until dismissed, so its outcome can be read back.
 */
export function blockdevBackupAction(opts: {
  jobId: string;
  device: string;
  target: string;
  sync: "full" | "incremental";
  bitmap?: string;
  perf?: BackupPerf;
  /** Copy rate limit in bytes per second (copy-before-write is never held back by it). */
  speed?: number;
}): TransactionAction {
  return {
    type: "blockdev-backup",
    data: {
      "job-id": opts.jobId,
      device: opts.device,
      target: opts.target,
      sync: opts.sync,
      ...(opts.bitmap ? { bitmap: opts.bitmap } : {}),
      ...(opts.speed !== undefined ? { speed: opts.speed } : {}),
      ...(opts.perf
        ? {
          "x-perf": {
            ...(opts.perf.useCopyRange !== undefined
              ? { "use-copy-range": opts.perf.useCopyRange }
              : {}),
            ...(opts.perf.maxWorkers !== undefined ? { "max-workers": opts.perf.maxWorkers } : {}),
            ...(opts.perf.maxChunk !== undefined ? { "max-chunk": opts.perf.maxChunk } : {}),
          },
        }
        : {}),
      "auto-dismiss": false,
    },
  };
}

/**
 * `transaction`: every action at the same point in time, all or none. `grouped`: when one
 * job of it fails, the others are cancelled too.
 */
export async function transaction(
  qmp: QmpExecutor,
  actions: TransactionAction[],
  grouped = false,
  timeoutMs?: number,
): Promise<void> {
  await qmp.execute("transaction", {
    actions,
    ...(grouped ? { properties: { "completion-mode": "grouped" } } : {}),
  }, { timeoutMs });
}
