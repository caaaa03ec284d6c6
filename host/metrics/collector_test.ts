import { assertEquals } from "../../core/testing/assert.ts";
import { QmpError } from "../kvm/qmp.ts";
import type { QmpExecutor } from "../kvm/commands.ts";
import { hostSample, type HostSources, readHost, readVm, vmSample } from "./collector.ts";

/** A fake /proc and /sys: paths to texts. */
function files(map: Record<string, string>) {
  return (path: string) => Promise.resolve(map[path] ?? null);
}

/** A QEMU answering query-blockstats with `rd` bytes read, and no balloon. */
function qmp(rd: number): QmpExecutor {
  return {
    execute<T>(command: string): Promise<T> {
      if (command === "query-balloon") {
        return Promise.reject(new QmpError(command, "DeviceNotActive", "No balloon device"));
      }
      return Promise.resolve([
        {
          device: "",
          "node-name": "root",
          qdev: "/machine/peripheral/root-dev/virtio-backend",
          stats: { rd_bytes: rd, wr_bytes: 0, rd_operations: rd / 512, wr_operations: 0 },
        },
        // An empty drive without a device (none in novactl's VMs): left out.
        { device: "", stats: { rd_bytes: 1, wr_bytes: 1, rd_operations: 1, wr_operations: 1 } },
      ] as T);
    },
  };
}

const stat = (ticks: number) =>
  `77 (qemu-system-x86) S 1 77 77 0 -1 0 0 0 0 0 ${ticks} 0 0 0 20 0 4 0 1 1 1`;

Deno.test("collector: a VM's CPU, RSS, disk and tap counters become rates", async () => {
  const vm = (rd: number) => ({
    name: "a",
    pid: 77,
    qmp: qmp(rd),
    taps: [{ nic: "net0", tap: "nt0" }],
  });
  let at = 1_000_000;
  const now = () => at;
  const r1 = await readVm(
    vm(0),
    files({
      "/proc/77/stat": stat(100),
      "/proc/77/status": "VmRSS:\t 1000 kB\n",
      "/sys/class/net/nt0/statistics/rx_bytes": "0\n",
      "/sys/class/net/nt0/statistics/tx_bytes": "0\n",
    }),
    now,
  );
  at += 10_000;
  const r2 = await readVm(
    vm(10_240),
    files({
      "/proc/77/stat": stat(600), // 5 s of CPU in 10 s: 50 %
      "/proc/77/status": "VmRSS:\t 2000 kB\n",
      "/sys/class/net/nt0/statistics/rx_bytes": "100\n", // the guest sent 100 bytes
      "/sys/class/net/nt0/statistics/tx_bytes": "2000\n",
    }),
    now,
  );
  assertEquals(r2!.disks.map((d) => d.disk), ["root"]);
  assertEquals(r2!.balloonBytes, null);
  assertEquals(vmSample(r1!, r2!), {
    cpuPercent: 50,
    memoryBytes: 2000 * 1024,
    balloonBytes: null,
    diskReadBytesPerSec: 1024,
    diskWriteBytesPerSec: 0,
    diskReadOpsPerSec: 2,
    diskWriteOpsPerSec: 0,
    netRxBytesPerSec: 200,
    netTxBytesPerSec: 10,
  });
});

Deno.test("collector: a restarted QEMU (new pid) starts its counters from zero", async () => {
  const read = (pid: number, ticks: number) =>
    readVm(
      { name: "a", pid, qmp: qmp(0), taps: [] },
      files({ [`/proc/${pid}/stat`]: stat(ticks).replace("77", String(pid)) }),
      () => pid === 77 ? 0 : 10_000,
    );
  const before = (await read(77, 5_000))!;
  const after = (await read(78, 500))!;
  // Not 500 - 5000 ticks (negative): the new QEMU's 5 s are all its own, in 10 s.
  assertEquals(vmSample(before, after).cpuPercent, 50);
  const lower = (await read(78, 200))!;
  assertEquals(vmSample({ ...before, pid: 78 }, lower).cpuPercent, 20);
});

Deno.test("collector: a VM whose QEMU is gone reads as null", async () => {
  assertEquals(await readVm({ name: "a", pid: 5, qmp: qmp(0), taps: [] }, files({})), null);
});

Deno.test("collector: host CPU busy share, memory, disk, pools, load and VMs", async () => {
  const src = (vms: number): HostSources => ({
    disk: () => Promise.resolve({ totalBytes: 1000, freeBytes: 400 }),
    pools: () =>
      Promise.resolve({
        dir: { totalBytes: 1000, freeBytes: 400, allocatedBytes: 300 },
        fast: { totalBytes: 10, freeBytes: 5, allocatedBytes: 5 },
      }),
    vms: () => vms,
  });
  const proc = (busy: number, idle: number) =>
    files({
      "/proc/stat": `cpu  ${busy} 0 0 ${idle} 0 0 0 0 0 0\n`,
      "/proc/meminfo": "MemTotal: 4096 kB\nMemAvailable: 1024 kB\n",
      "/proc/loadavg": "1.50 1.00 0.50 1/100 42\n",
    });
  const a = (await readHost(src(1), proc(100, 900), () => 0))!;
  const b = (await readHost(src(2), proc(400, 1600), () => 10_000))!;
  assertEquals(hostSample(a, b), {
    cpuPercent: 30,
    memoryUsedBytes: 3072 * 1024,
    memoryTotalBytes: 4096 * 1024,
    diskUsedBytes: 600,
    diskTotalBytes: 1000,
    poolAllocatedBytes: 305,
    load1: 1.5,
    vms: 2,
  });
});
