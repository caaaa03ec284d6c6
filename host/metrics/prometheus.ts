/**
 * The host's and its VMs' series in the node's Prometheus registry. Per-VM series carry only
 * `vm` (and `disk` or `nic`), are exported by the VM's own host alone and are removed when the
 * VM leaves it, so their number is bounded by the VMs a host runs.
 *
 * Counters are fed with the difference between readings; a counter that went down (QEMU
 * restarted) adds its new value, as Prometheus's own reset handling would.
 */
import client from "prom-client";
import { registry } from "../../core/metrics/mod.ts";
import type { HostReading, VmReading } from "./collector.ts";
import type { HostSample, VmSample } from "./samples.ts";

const gauge = (name: string, help: string, labelNames: string[] = []) =>
  new client.Gauge({ name, help, labelNames, registers: [registry] });
const counter = (name: string, help: string, labelNames: string[]) =>
  new client.Counter({ name, help, labelNames, registers: [registry] });

const vm = {
  cpuSeconds: counter("novactl_vm_cpu_seconds_total", "CPU time of the VM's QEMU", ["vm"]),
  cpuPercent: gauge(
    "novactl_vm_cpu_percent",
    "CPU of the VM's QEMU over the last sample, in percent of one host CPU",
    ["vm"],
  ),
  memory: gauge("novactl_vm_memory_resident_bytes", "Resident set of the VM's QEMU", ["vm"]),
  balloon: gauge(
    "novactl_vm_balloon_bytes",
    "The guest's memory as its balloon sets it (VMs with a balloon device)",
    ["vm"],
  ),
  diskReadBytes: counter("novactl_vm_disk_read_bytes_total", "Bytes read from a disk", [
    "vm",
    "disk",
  ]),
  diskWriteBytes: counter("novactl_vm_disk_written_bytes_total", "Bytes written to a disk", [
    "vm",
    "disk",
  ]),
  diskReadOps: counter("novactl_vm_disk_reads_total", "Read operations on a disk", [
    "vm",
    "disk",
  ]),
  diskWriteOps: counter("novactl_vm_disk_writes_total", "Write operations on a disk", [
    "vm",
    "disk",
  ]),
  netRx: counter(
    "novactl_vm_network_receive_bytes_total",
    "Bytes the guest received on a NIC (its tap's transmitted bytes)",
    ["vm", "nic"],
  ),
  netTx: counter(
    "novactl_vm_network_transmit_bytes_total",
    "Bytes the guest sent on a NIC (its tap's received bytes)",
    ["vm", "nic"],
  ),
};

const host = {
  cpuPercent: gauge("novactl_host_cpu_percent", "Busy share of all the host's CPUs, in percent"),
  memoryUsed: gauge("novactl_host_memory_used_bytes", "Host memory in use (total - available)"),
  memoryTotal: gauge("novactl_host_memory_total_bytes", "Host memory"),
  diskUsed: gauge("novactl_host_disk_used_bytes", "Used space of the data directory's filesystem"),
  diskTotal: gauge("novactl_host_disk_total_bytes", "Size of the data directory's filesystem"),
  poolAllocated: gauge(
    "novactl_host_pool_allocated_bytes",
    "Bytes the volumes of a storage pool take on this host",
    ["pool"],
  ),
  poolFree: gauge("novactl_host_pool_free_bytes", "Free space of a storage pool on this host", [
    "pool",
  ]),
  poolTotal: gauge("novactl_host_pool_total_bytes", "Size of a storage pool on this host", [
    "pool",
  ]),
  load: gauge("novactl_host_load", "Load average over 1, 5 and 15 minutes", ["period"]),
  vms: gauge("novactl_host_vms", "QEMUs this host runs"),
};

/** Adds to `c` what a counter reading moved by since the previous one. */
function advance(
  c: client.Counter<string>,
  labels: Record<string, string>,
  prev: number | undefined,
  cur: number,
): void {
  const delta = prev === undefined || cur < prev ? cur : cur - prev;
  if (delta > 0) c.inc(labels, delta);
}

/** Which disks and NICs each VM has series for, to remove them all when it leaves. */
const exported = new Map<string, { disks: Set<string>; nics: Set<string> }>();

/** Updates the VM's series with a reading and the sample derived from it (null: first one). */
export function exportVm(
  name: string,
  prev: VmReading | undefined,
  cur: VmReading,
  sample: VmSample | null,
): void {
  const same = prev?.pid === cur.pid ? prev : undefined;
  const labels = { vm: name };
  const seen = exported.get(name) ?? { disks: new Set(), nics: new Set() };
  exported.set(name, seen);
  advance(vm.cpuSeconds, labels, same?.cpuSeconds, cur.cpuSeconds);
  if (sample) vm.cpuPercent.set(labels, sample.cpuPercent);
  vm.memory.set(labels, cur.rssBytes);
  if (cur.balloonBytes !== null) vm.balloon.set(labels, cur.balloonBytes);
  for (const d of cur.disks) {
    const p = same?.disks.find((x) => x.disk === d.disk);
    const l = { vm: name, disk: d.disk };
    seen.disks.add(d.disk);
    advance(vm.diskReadBytes, l, p?.readBytes, d.readBytes);
    advance(vm.diskWriteBytes, l, p?.writeBytes, d.writeBytes);
    advance(vm.diskReadOps, l, p?.readOps, d.readOps);
    advance(vm.diskWriteOps, l, p?.writeOps, d.writeOps);
  }
  for (const n of cur.nics) {
    const p = same?.nics.find((x) => x.nic === n.nic);
    const l = { vm: name, nic: n.nic };
    seen.nics.add(n.nic);
    advance(vm.netRx, l, p?.rxBytes, n.rxBytes);
    advance(vm.netTx, l, p?.txBytes, n.txBytes);
  }
}

/** Removes every series of a VM that left this host (or stopped). */
export function unexportVm(name: string): void {
  const labels = { vm: name };
  for (const m of [vm.cpuSeconds, vm.cpuPercent, vm.memory, vm.balloon]) m.remove(labels);
  const seen = exported.get(name);
  for (const disk of seen?.disks ?? []) {
    for (const m of [vm.diskReadBytes, vm.diskWriteBytes, vm.diskReadOps, vm.diskWriteOps]) {
      m.remove({ vm: name, disk });
    }
  }
  for (const nic of seen?.nics ?? []) {
    for (const m of [vm.netRx, vm.netTx]) m.remove({ vm: name, nic });
  }
  exported.delete(name);
}

/** Updates the host's series. */
export function exportHost(reading: HostReading, sample: HostSample | null): void {
  if (sample) host.cpuPercent.set(sample.cpuPercent);
  host.memoryUsed.set(reading.memoryTotalBytes - reading.memoryAvailableBytes);
  host.memoryTotal.set(reading.memoryTotalBytes);
  host.diskUsed.set(reading.disk.totalBytes - reading.disk.freeBytes);
  host.diskTotal.set(reading.disk.totalBytes);
  // Pools come and go with the cluster's records: only the current ones are exported.
  for (const m of [host.poolAllocated, host.poolFree, host.poolTotal]) m.reset();
  for (const [pool, u] of Object.entries(reading.pools)) {
    host.poolAllocated.set({ pool }, u.allocatedBytes);
    host.poolFree.set({ pool }, u.freeBytes);
    host.poolTotal.set({ pool }, u.totalBytes);
  }
  reading.load.forEach((v, i) => host.load.set({ period: ["1m", "5m", "15m"][i] }, v));
  host.vms.set(reading.vms);
}
