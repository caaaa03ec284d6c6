/** Storage pools for VM disks: the local `dir` pool of qcow2 volumes (qemu-img). */
export * from "./dir_pool.ts";
export { imageInfo, qemuImg } from "./qemu_img.ts";
export * from "./blob_store.ts";
export * from "./sweep.ts";
export * from "./disk_probe.ts";
