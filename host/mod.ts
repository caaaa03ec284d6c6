/** Everything that makes a node a hypervisor host: the VM reconcile loop over the KVM driver and storage. */
export * from "./vm_host.ts";
export * from "./migrator.ts";
export * from "./simulated_host.ts";
