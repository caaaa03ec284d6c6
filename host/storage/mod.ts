/**
 * Storage pools for VM disks: the `dir` pool of qcow2 volumes (qemu-img), the btrfs backend
 * (a subvolume per volume), and the host's set of pools built from the replicated records.
 */
export * from "./dir_pool.ts";
export { BtrfsPool } from "./btrfs.ts";
export * from "./host_pools.ts";
export { imageInfo, qemuImg } from "./qemu_img.ts";
export * from "./blob_store.ts";
export * from "./sweep.ts";
export * from "./disk_probe.ts";
