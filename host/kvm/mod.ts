/**
 * The KVM/QEMU host driver: QMP and guest-agent clients, one daemonized QEMU
 * per VM (re-adoptable by pidfile), accelerator probing, console logs and
 * cloud-init seeds.
 */
export * from "./accel.ts";
export * from "./qemu.ts";
export * from "./console.ts";
export * from "./seed.ts";
export { QmpClient, type QmpEvent } from "./qmp.ts";
export { GuestAgent } from "./qga.ts";
