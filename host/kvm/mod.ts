/**
 * The KVM/QEMU host driver: QMP and guest-agent clients, one QEMU per VM
 * (in a session of its own, or a child of the fencing watchdog for HA VMs; re-adoptable by
 * pidfile either way), accelerator probing, console logs and cloud-init seeds, QEMU's
 * confinement (user and seccomp) and its TLS credentials for migration and NBD.
 */
export * from "./accel.ts";
export * from "./qemu.ts";
export * from "./console.ts";
export * from "./seed.ts";
export { QmpClient, type QmpEvent } from "./qmp.ts";
export { GuestAgent } from "./qga.ts";
export { buildQemuCredsDir, type NodeTlsPaths, nodeTlsPaths } from "./tls.ts";
export { confinementArgs, QEMU_USER, qemuUser, runAsArgs } from "./confine.ts";
export * from "./qemu_version.ts";
