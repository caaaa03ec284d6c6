/**
 * Commands replicated through the Raft log. Each carries the time and actor
 * stamped by the proposing node so that applying them is deterministic.
 */
import type { ErrorCode } from "../errors/mod.ts";
import type { ClusterConfig } from "../config/mod.ts";
import type { AuditAppend } from "./audit.ts";
import type { BackupCommand } from "./backups.ts";
import type { AlertCommand } from "./alerts.ts";

export type Role = "admin" | "operator" | "viewer";

export interface MemberSeed {
  name: string;
  url: string;
  /** SHA-256 of the member's certificate (see member_certs.ts). */
  fingerprint?: string;
  /** SHA-256 of its per-node credential (plain-HTTP loopback mode). */
  credentialHash?: string;
}

export interface Inventory {
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  diskFreeGiB: number;
  /**
   * The accelerator the host's probe chose; null until the probe has decided (a
   * host registers before that, and takes no VMs until it knows how to run them).
   */
  accel: "kvm" | "tcg" | null;
  arch: string;
  kernel: string;
  hostname: string;
  version: string;
  /** Usage of the host's `dir` storage pool (kept for hosts and readers older than pools). */
  pool?: { volumes: number; virtualBytes: number; allocatedBytes: number; freeBytes: number };
  /**
   * Capacity and usage of every storage pool this host can reach, by pool name
   * (core/fsm/pools.ts); a pool it cannot use carries its `error`.
   */
  pools?: Record<string, PoolHostUsage>;
  /** The host's networking (absent with `--networking off`). */
  network?: HostNetworkInventory;
}

/**
 * What a host with networking on reports: its datapath, tunnel address, the provider bridge
 * mappings in effect on it, and its OVN central member.
 */
export interface HostNetworkInventory {
  datapath: "netdev" | "system";
  tunnelIp: string;
  /**
   * The bridge mappings the host's OVS has in effect (physnet → bridge): the replicated ones
   * (core/fsm/bridge_mappings.ts) once the host applied them. Absent from older hosts.
   */
  bridgeMappings?: Record<string, string>;
  /** Where its member of the embedded OVN central answers when it is a voter. */
  central: { address: string; ports: { nb: number; sb: number; nbRaft: number; sbRaft: number } };
}

/** One pool on one host, as the host measured it (host/storage/host_pools.ts). */
export interface PoolHostUsage {
  totalBytes: number;
  freeBytes: number;
  /** Bytes the pool's volumes take on disk. */
  allocatedBytes: number;
  volumes: number;
  /** Why the host cannot use the pool (not mounted, not btrfs, ...); absent when it can. */
  error?: string;
}

export type Command =
  | {
    op: "cluster.init";
    clusterId: string;
    member: MemberSeed;
    adminTokenHash: string;
    config: ClusterConfig;
    /** The cluster CA, kept in replicated state so any future leader can sign joins. */
    ca?: { certPem: string; keyPem: string };
    at: number;
  }
  /** Raises the cluster level (core/upgrade/): proposed only once every member supports it. */
  | { op: "cluster.upgrade"; level: number; at: number }
  /** Replaces an operator's metadata on a host (level 2, core/fsm/node_meta.ts). */
  | { op: "node.meta"; name: string; meta: Record<string, string>; by: string; at: number }
  | { op: "joinToken.create"; id: string; expiresAt: number; at: number; by: string }
  | { op: "joinToken.consume"; id: string; node: string; at: number }
  /**
   * Voids every join token not used yet (as if it expired at `at`). Only written by the
   * offline recovery of a data dir (core/recovery/): tokens handed out for the old cluster
   * must not admit nodes into the recovered one.
   */
  | { op: "joinToken.voidAll"; at: number }
  | {
    op: "node.upsert";
    name: string;
    url: string;
    inventory: Inventory;
    labels: Record<string, string>;
    at: number;
  }
  | { op: "node.state"; name: string; state: NodeState; at: number }
  | { op: "node.remove"; name: string; at: number }
  | {
    op: "config.patch";
    changes: Partial<ClusterConfig>;
    ifVersion?: number;
    by: string;
    at: number;
  }
  | { op: "config.replace"; config: ClusterConfig; ifVersion?: number; by: string; at: number }
  | { op: "config.rollback"; version: number; ifVersion?: number; by: string; at: number }
  | {
    op: "apiToken.create";
    /** SHA-256 (hex) of the secret: the secret itself is never replicated. */
    hash: string;
    name: string;
    role: Role;
    /** Epoch ms after which the token is refused; null or absent: never. */
    expiresAt?: number | null;
    by: string;
    at: number;
  }
  /** Deletes the token named `name`: its secret is refused from the next request on. */
  | { op: "apiToken.revoke"; name: string; by: string; at: number }
  /**
   * Gives the token named `name` a new secret (same name and role); the old
   * secret is refused from then on. `expiresAt` absent keeps the old expiry.
   */
  | {
    op: "apiToken.rotate";
    name: string;
    hash: string;
    expiresAt?: number | null;
    by: string;
    at: number;
  }
  | { op: "image.create"; image: ImageSpec; by: string; at: number }
  | { op: "image.delete"; name: string; at: number }
  | { op: "vm.create"; vm: VmSpec; at: number; by: string }
  /** Placements the leader decided, many per entry; each is checked again as it is applied. */
  | { op: "plan.apply"; creates: PlannedCreate[]; at: number }
  | {
    op: "vm.desired";
    name: string;
    desired: VmDesired;
    keepDisks?: boolean;
    /** Stop or delete without waiting for the guest to shut down. */
    force?: boolean;
    /** Follow the change as an operation (level 2): a start, stop or delete. */
    track?: TrackAs;
    at: number;
    by: string;
  }
  | {
    op: "vm.update";
    name: string;
    changes: VmChanges;
    /** Follow the change as an operation (level 2): a restart (a new generation) only. */
    track?: TrackAs;
    at: number;
    by: string;
  }
  | {
    op: "vm.observed";
    name: string;
    node: string;
    state: VmState;
    reason?: string;
    guest?: GuestInfo | null;
    /** The display device of the VM's QEMU here; null: none runs; absent: unchanged. */
    display?: VmDisplay | null;
    at: number;
  }
  /**
   * The attached disks and NICs the VM's QEMU has plugged, as its host reports them when
   * that set changes (level 2, core/fsm/vm_devices.ts).
   */
  | { op: "vm.devices"; name: string; node: string; plugged: VmPlugged; at: number }
  | { op: "vm.snapshot.add"; name: string; node: string; snapshot: VmSnapshot; at: number }
  | { op: "vm.snapshot.remove"; name: string; node: string; snapshot: string; at: number }
  | { op: "vm.remove"; name: string; node: string; at: number }
  /** Live or cold migration finished: the VM now lives on `to` (applied only while it is on `from`). */
  | { op: "vm.migrated"; name: string; from: string; to: string; opId: string; at: number }
  /** HA failover or evacuation: the VM is re-placed on `to` and started there. */
  | { op: "vm.moved"; name: string; from: string; to: string; reason: string; at: number }
  /** NIC hot-plug (core/fsm/vm_nics.ts): a NIC added to a VM, allocated as at create. */
  | { op: "vm.nic.add"; name: string; nic: NicRequest; at: number; by: string }
  /** Removes the VM's NIC `nic`: its index ("1") or its MAC. */
  | { op: "vm.nic.remove"; name: string; nic: string; at: number; by: string }
  /** A storage pool (core/fsm/pools.ts); its host checked and prepared it first. */
  | { op: "pool.create"; pool: PoolSpec; by: string; at: number }
  | { op: "pool.delete"; name: string; by: string; at: number }
  /** A volume its host created in its pool (core/fsm/volumes.ts). */
  | { op: "volume.create"; volume: VolumeSpec; by: string; at: number }
  /** A volume its host grew (the file, or a running guest's disk through QMP). */
  | { op: "volume.resize"; name: string; sizeBytes: number; by: string; at: number }
  | { op: "volume.delete"; name: string; by: string; at: number }
  /** Attaches a volume to a VM (core/fsm/vm_disks.ts); a running VM's host hot-plugs it. */
  | { op: "vm.disk.attach"; name: string; volume: string; by: string; at: number }
  /** Detaches the VM's disk `disk` (a volume name or a disk id). */
  | { op: "vm.disk.detach"; name: string; disk: string; by: string; at: number }
  | { op: "network.create"; network: NetworkSpec; by: string; at: number }
  | { op: "network.delete"; name: string; by: string; at: number }
  | { op: "sg.create"; group: SecurityGroupSpec; by: string; at: number }
  | { op: "sg.delete"; name: string; by: string; at: number }
  | { op: "sg.rule.add"; group: string; rule: SecurityGroupRuleSpec; by: string; at: number }
  | { op: "sg.rule.remove"; group: string; id: string; by: string; at: number }
  | { op: "router.create"; router: RouterSpec; by: string; at: number }
  | { op: "router.delete"; name: string; by: string; at: number }
  /** Gives `router` a port on `network` (at the network's gateway address). */
  | { op: "router.attach"; router: string; network: string; by: string; at: number }
  | { op: "router.detach"; router: string; network: string; by: string; at: number }
  /** Sets (or with null, takes away) the router's uplink; `ip` null: IPAM picks its address. */
  | {
    op: "router.uplink";
    router: string;
    uplink: string | null;
    ip: string | null;
    by: string;
    at: number;
  }
  | { op: "fip.create"; network: string; ip: string | null; by: string; at: number }
  | { op: "fip.delete"; ip: string; by: string; at: number }
  | { op: "fip.attach"; ip: string; vm: string; nic: number; by: string; at: number }
  | { op: "fip.detach"; ip: string; by: string; at: number }
  /** Replaces a host's provider bridge mappings (physnet → OVS bridge); empty clears them. */
  | {
    op: "node.bridgeMappings";
    node: string;
    mappings: Record<string, string>;
    by: string;
    at: number;
  }
  | { op: "group.create"; group: PlacementGroup; by: string; at: number }
  | { op: "group.delete"; name: string; at: number }
  | { op: "operation.create"; operation: OperationSpec; at: number }
  | {
    op: "operation.update";
    id: string;
    state?: OperationState;
    progress?: Record<string, unknown>;
    result?: Record<string, unknown>;
    error?: string;
    at: number;
  }
  | AuditAppend
  | BackupCommand
  | AlertCommand
  | { op: "noop" };

export type NodeState = "ready" | "cordoned" | "draining" | "drained" | "offline";

export interface PlacementGroup {
  name: string;
  policy: "affinity" | "anti-affinity";
  strict: boolean;
}

export type OperationState = "running" | "succeeded" | "failed" | "aborted";

/** A VM's lifecycle action followed as an operation (core/fsm/vm_operations.ts). */
export type VmLifecycleKind = "create" | "start" | "stop" | "restart" | "delete";

/** What long operations do. */
export type OperationKind =
  | "migrate"
  | "drain"
  | "evacuate"
  | "rebalance"
  | "backup"
  | "restore"
  | "verify"
  | "snapshot-create"
  | "snapshot-restore"
  | "snapshot-delete"
  | VmLifecycleKind;

/**
 * Asks the state machine to follow a VM's desired-state change as an operation (cluster
 * level 2): made in the change's own entry, its id derived from the entry's index, and
 * finished by the VM's reports (core/fsm/vm_operations.ts).
 */
export interface TrackAs {
  /** The API request that asked for the change (its `x-request-id`). */
  requestId?: string;
}

/** What a tracked change answers about the operation it made. */
export interface OperationBrief {
  id: string;
  kind: OperationKind;
  state: OperationState;
}

/** A long operation (migration, drain, ...): an id, progress and an outcome, replicated. */
export interface OperationSpec {
  id: string;
  kind: OperationKind;
  /** What it acts on: a VM or a node name. */
  target: string;
  /** Node that executes it (reports progress, can abort it). */
  runner: string;
  params: Record<string, unknown>;
  by: string;
  /** The API request that started it (its `x-request-id`, in its audit record too). */
  requestId?: string;
}

export interface OperationRecord extends OperationSpec {
  state: OperationState;
  progress: Record<string, unknown>;
  result: Record<string, unknown> | null;
  error: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface BlobRef {
  sha256: string;
  size: number;
}

/** An image: a kernel (+ initrd, cmdline) for direct boot, or a qcow2 disk. */
export interface ImageSpec {
  name: string;
  kind: "kernel" | "disk";
  kernel?: BlobRef;
  initrd?: BlobRef;
  cmdline?: string;
  disk?: BlobRef & { virtualBytes: number };
  /** Nodes known to hold the blobs (the one that received the upload first). */
  sources: string[];
}

export interface ImageRecord extends ImageSpec {
  createdAt: string;
  createdBy: string;
}

export type VmState =
  | "pending"
  | "scheduled"
  | "starting"
  | "running"
  | "stopping"
  | "stopped"
  | "migrating"
  | "failed";

/** What the operator asked for; hosts converge on it. "deleted" removes the VM once its host cleaned up. */
export type VmDesired = "running" | "stopped" | "deleted";

export type RestartPolicy = "never" | "on-failure" | "always";

/**
 * Where a disk's first contents come from when its host creates it; `attached`: the disk is a
 * volume resource (core/fsm/volumes.ts) attached to the VM, which never creates or deletes it.
 */
export type DiskSource =
  | { kind: "blank" }
  | { kind: "image"; image: string }
  | { kind: "volume"; volume: string; mode: "linked" | "full" }
  | { kind: "attached" }
  /** Restored from a backup by a restore operation (host/backup/); never made on first start. */
  | { kind: "backup"; backup: string; disk: string };

export interface VmDisk {
  /** Device id inside the VM ("root", ...). */
  id: string;
  /**
   * The storage pool's name (core/fsm/pools.ts); absent: `dir`, the host's local pool. The
   * built-in `shared` is the cluster's shared-dir pool at `storage.sharedDir`.
   */
  pool?: string;
  /** Volume name in the host's pool. */
  volume: string;
  sizeBytes: number;
  source: DiskSource;
  /**
   * The PCIe root port an attached volume sits on (host/kvm/qemu.ts DISK_PORTS), so that a
   * hot-plugged disk has the same slot on a migration's destination. Absent: on the root bus.
   */
  port?: number;
}

/** A storage pool (core/fsm/pools.ts). */
export interface PoolSpec {
  name: string;
  /**
   * `dir`: qcow2 files in a host-local directory; `shared-dir`: qcow2 files in a directory
   * mounted at the same path on every host (NFS, ...); `btrfs`: each volume a subvolume of a
   * btrfs filesystem (an existing mount, or a loop image the pool made).
   */
  driver: "dir" | "shared-dir" | "btrfs";
  /** The directory (or btrfs mount point); null: the node's own `DATA_DIR/pool` (dir only). */
  source: string | null;
  /** The one host that has the pool; null: every host (the same path on each). */
  node: string | null;
  /** A btrfs pool on a loop image the pool made: the image file and its size. */
  loop: { image: string; sizeBytes: number } | null;
}

/** A volume as asked for (core/fsm/volumes.ts). */
export interface VolumeSpec {
  name: string;
  pool: string;
  /** The host that holds it (a local pool's); null for a shared-dir pool. */
  node: string | null;
  sizeBytes: number;
  /** The image whose disk it started as a copy of; null: blank. */
  fromImage: string | null;
}

export interface CloudInitSpec {
  user?: string;
  sshKeys?: string[];
  passwordHash?: string;
  userData?: string;
}

export interface VmSnapshot {
  name: string;
  memory: boolean;
  createdAt: string;
  /** The VM's run state when taken (a memory snapshot resumes into it). */
  vmState: string;
  /**
   * A memory snapshot's display device: it is loaded into a QEMU with the same one (the device
   * state must match). Absent on snapshots taken before displays: none.
   */
  display?: VmDisplay;
}

/**
 * A VM's display device (host/kvm/qemu.ts): "vga", the standard VGA its VNC console shows, or
 * "none" (QEMU's placeholder screen).
 */
export type VmDisplay = "vga" | "none";

/** What the guest agent reports; null when no agent answers. */
export interface GuestInfo {
  agent: "ok" | "absent";
  os?: { id?: string; name?: string; prettyName?: string; version?: string; kernel?: string };
  interfaces?: { name: string; mac?: string; addresses: string[] }[];
}

/** A virtual network (core/fsm/networks.ts). */
export interface NetworkSpec {
  name: string;
  /** overlay: an OVN logical switch over geneve; vlan and flat: a provider network (localnet). */
  type: "overlay" | "vlan" | "flat";
  /** IPv4 CIDR, canonical (`10.0.0.0/24`). */
  subnet: string;
  /** The router address handed out by DHCP; null: none. */
  gateway: string | null;
  /** 802.1Q id for type vlan; null otherwise. */
  vlan: number | null;
  /** The provider network name hosts map to a bridge (vlan and flat); null for overlay. */
  physnet: string | null;
  dhcp: boolean;
  dns: string[];
  mtu: number;
  /** SNAT to the uplink through a router (the routers part of the networking issue). */
  nat: boolean;
  /** Address ranges IPAM never hands out (`10.0.0.2-10.0.0.9`). */
  reserved: string[];
}

/** A security group (core/fsm/security_groups.ts): a named set of stateful allow rules. */
export interface SecurityGroupSpec {
  name: string;
  description: string;
}

/**
 * One allow rule of a security group. Ingress rules admit traffic to the
 * group's NICs from `remote`; egress rules let them send to it. Ports apply to
 * tcp and udp only; `remoteCidr` and `remoteGroup` are exclusive, both null
 * meaning anywhere.
 */
export interface SecurityGroupRuleSpec {
  direction: "ingress" | "egress";
  protocol: "tcp" | "udp" | "icmp" | "any";
  portMin: number | null;
  portMax: number | null;
  /** Canonical IPv4 CIDR (`10.0.0.0/8`, `0.0.0.0/0`). */
  remoteCidr: string | null;
  /** Another (or the same) group: the addresses of its NICs. */
  remoteGroup: string | null;
}

/**
 * A router (core/fsm/routers.ts): routes between the networks attached to it
 * and, through its uplink (a flat or vlan network), to the outside, with the
 * attached subnets SNATed to its uplink address when `snat` is on.
 */
export interface RouterSpec {
  name: string;
  /** The flat or vlan network its gateway port sits on; null: none yet. */
  uplink: string | null;
  /** Its address on the uplink; null: IPAM picks one (when there is an uplink). */
  uplinkIp: string | null;
  snat: boolean;
}

/** A NIC as asked for: its network, and optionally its address, MAC and security groups. */
export interface NicRequest {
  network: string;
  ip?: string | null;
  mac?: string | null;
  /** Security groups the NIC is in; absent or empty: none (all traffic passes). */
  securityGroups?: string[];
}

/** A NIC as recorded once its create was applied: address and MAC decided. */
export interface VmNic extends NicRequest {
  ip: string | null;
  mac: string;
  /**
   * The NIC's number: its logical port (`nv-VM-N`), tap and QEMU device ids, kept when
   * another NIC is removed. Absent on NICs recorded before hot-plug: their position.
   */
  index?: number;
}

/** NIC `nic`'s number, at `position` in its VM's list (see {@link VmNic.index}). */
export function nicIndex(nic: NicRequest & { index?: number }, position: number): number {
  return nic.index ?? position;
}

export interface VmSpec {
  name: string;
  uuid: string;
  image: string;
  cpus: number;
  memoryMiB: number;
  /** Host the VM is placed on (null while unplaced). */
  node: string | null;
  ha: boolean;
  labels: Record<string, string>;
  desired: VmDesired;
  restartPolicy: RestartPolicy;
  disks: VmDisk[];
  cloudInit: CloudInitSpec | null;
  /** A template never runs; it is the immutable base of linked clones. */
  template: boolean;
  /** Bumped by `vm restart`: the host replaces a QEMU launched for an older generation. */
  generation: number;
  /** With desired "deleted": leave the volumes in the pool. */
  keepDisks?: boolean;
  /** With desired "stopped"/"deleted": kill rather than ask the guest to power off. */
  force?: boolean;
  snapshots: VmSnapshot[];
  /** Placement group (affinity / anti-affinity). */
  group?: string;
  /**
   * NICs on networks (asked for in the create; recorded as {@link VmNic} with their address
   * and MAC once applied). Absent or empty: the VM's one user-mode NIC, as before networks.
   */
  nics?: NicRequest[];
  /** Host label constraints: `key=value` / `key!=value`. */
  constraints?: { key: string; op: "=" | "!="; value: string }[];
  /** Scheduler strategy for this VM (else the cluster's). */
  strategy?: "spread" | "pack";
  /** HA restart order: higher first. */
  haPriority?: number;
  /** HA restarts allowed within haRestartWindowMs (else vms.restartLimit / vms.restartWindowMs). */
  haMaxRestarts?: number;
  haRestartWindowMs?: number;
  /** Set while a migration of this VM runs. */
  migration?: { opId: string; to: string } | null;
  /**
   * The display device of the VM's QEMU, as its host reports it (vm.observed); null while no
   * QEMU runs, absent until first reported. Chosen per launch, not by the operator: a fresh start
   * gets "vga", a migration or memory snapshot restore keeps what the saved state had.
   */
  display?: VmDisplay | null;
  /**
   * What the VM's running QEMU has plugged, as its host reports it (vm.devices, level 2);
   * null or absent while none runs or before the host reported.
   */
  plugged?: VmPlugged | null;
}

/** The hot-pluggable devices a running QEMU has: attached volumes and NICs on networks. */
export interface VmPlugged {
  /** Attached volumes, by volume name. */
  disks: string[];
  /** NICs on networks, by MAC (lower case). */
  nics: string[];
}

/** Fields an operator may change after creation (through vm.update). */
export interface VmChanges {
  cpus?: number;
  memoryMiB?: number;
  template?: boolean;
  restartPolicy?: RestartPolicy;
  generation?: number;
  disks?: VmDisk[];
  labels?: Record<string, string>;
  migration?: { opId: string; to: string } | null;
}

export interface VmRecord extends VmSpec {
  state: VmState;
  reason: string | null;
  guest: GuestInfo | null;
  createdAt: string;
  updatedAt: string;
}

/** One VM create in a `plan.apply` entry: the VM with its host chosen, and who asked. */
export interface PlannedCreate {
  vm: VmSpec;
  by: string;
  /** Follow the create (and start) as an operation (level 2). */
  track?: TrackAs;
}

/** What `plan.apply` answers for each create, in order. */
export type PlannedCreateResult =
  | { ok: true; vm: VmRecord; operation?: OperationBrief }
  | {
    ok: false;
    error: { code: ErrorCode; message: string; details?: unknown };
    /** The chosen host no longer fits the VM (decided on state that moved on): worth deciding again. */
    stale: boolean;
  };
