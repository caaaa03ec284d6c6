/**
 * Commands replicated through the Raft log. Each carries the time and actor
 * stamped by the proposing node so that applying them is deterministic.
 */
import type { ClusterConfig } from "../config/mod.ts";

export type Role = "admin" | "operator" | "viewer";

export interface MemberSeed {
  name: string;
  url: string;
}

export interface Inventory {
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  diskFreeGiB: number;
  accel: "kvm" | "tcg";
  arch: string;
  kernel: string;
  hostname: string;
  version: string;
}

export type Command =
  | {
    op: "cluster.init";
    clusterId: string;
    member: MemberSeed;
    adminTokenHash: string;
    config: ClusterConfig;
    at: number;
  }
  | { op: "joinToken.create"; id: string; expiresAt: number; at: number; by: string }
  | { op: "joinToken.consume"; id: string; node: string; at: number }
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
  | { op: "apiToken.create"; hash: string; name: string; role: Role; by: string; at: number }
  | { op: "image.create"; image: ImageSpec; by: string; at: number }
  | { op: "image.delete"; name: string; at: number }
  | { op: "vm.create"; vm: VmSpec; at: number; by: string }
  | { op: "vm.desired"; name: string; desired: VmDesired; at: number; by: string }
  | { op: "vm.observed"; name: string; node: string; state: VmState; reason?: string; at: number }
  | { op: "vm.remove"; name: string; node: string; at: number }
  | { op: "noop" };

export type NodeState = "ready" | "cordoned" | "draining" | "offline";

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

export interface VmSpec {
  name: string;
  image: string;
  cpus: number;
  memoryMiB: number;
  /** Host the VM is placed on (null while unplaced). */
  node: string | null;
  ha: boolean;
  labels: Record<string, string>;
  desired: VmDesired;
}

export interface VmRecord extends VmSpec {
  state: VmState;
  reason: string | null;
  createdAt: string;
  updatedAt: string;
}
