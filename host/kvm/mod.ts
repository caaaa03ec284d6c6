/**
 * The KVM/QEMU host driver: QMP and guest-agent clients, one QEMU per VM
 * (daemonized, or a child of the fencing watchdog for HA VMs; re-adoptable by
 * pidfile either way), accelerator probing, console logs and cloud-init seeds.
 */
export * from "./accel.ts";
export * from "./qemu.ts";
export * from "./console.ts";
export * from "./seed.ts";
export { QmpClient, type QmpEvent } from "./qmp.ts";
export { GuestAgent } from "./qga.ts";
