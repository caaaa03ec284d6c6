import { assert, assertEquals } from "../../core/testing/assert.ts";
import { registry } from "../../core/metrics/mod.ts";
import type { QmpExecutor } from "../kvm/commands.ts";
import { FINE, MetricsHistory } from "./history.ts";
import { historyWindow } from "./query.ts";
import { MetricsSampler } from "./sampler.ts";

const noQmp: QmpExecutor = { execute: () => Promise.reject(new Error("no QEMU")) };

Deno.test("sampler: VM samples go to history and /metrics; a VM that leaves is removed", async () => {
  let t = 1_700_000_000_000;
  let ticks = 0;
  let vms = ["s1", "s2"];
  const files: Record<string, () => string> = {
    "/proc/stat": () => `cpu  ${ticks} 0 0 ${ticks} 0 0 0 0 0 0\n`,
    "/proc/meminfo": () => "MemTotal: 4096 kB\nMemAvailable: 1024 kB\n",
    "/proc/loadavg": () => "0.5 0.4 0.3 1/1 1\n",
  };
  for (const pid of [11, 12]) {
    files[`/proc/${pid}/stat`] = () => `${pid} (q) S 1 1 1 0 -1 0 0 0 0 0 ${ticks} 0 0 0 20 0 1`;
    files[`/proc/${pid}/status`] = () => "VmRSS:\t 100 kB\n";
  }
  const sampler = new MetricsSampler({
    history: new MetricsHistory(":memory:"),
    vms: () => vms.map((name, i) => ({ name, pid: 11 + i, qmp: noQmp, taps: [] })),
    host: {
      disk: () => Promise.resolve({ totalBytes: 10, freeBytes: 5 }),
      pools: () => Promise.resolve({}),
      vms: () => vms.length,
    },
    read: (p) => Promise.resolve(files[p]?.() ?? null),
    now: () => t,
  });
  for (let i = 0; i < 4; i++) {
    await sampler.sampleOnce();
    t += FINE.stepMs;
    ticks += 500; // 5 s of CPU every 10 s
  }
  assertEquals(sampler.latestVm("s1")?.sample.cpuPercent, 50);
  assertEquals(sampler.latestHost()?.sample.cpuPercent, 50);
  const points = sampler.vmHistory("s1", historyWindow({ since: "1h" }, t));
  assertEquals(points.length, 3, "the first reading has no rate");
  let text = await registry.metrics();
  assert(/novactl_vm_cpu_seconds_total\{vm="s2"\} 15/.test(text), text);
  assert(/novactl_host_vms 2/.test(text), "host VM count");

  vms = ["s1"];
  await sampler.sampleOnce();
  text = await registry.metrics();
  assert(!text.includes('vm="s2"'), "the series of a VM that left are gone");
  assert(text.includes('novactl_vm_cpu_percent{vm="s1"}'));
  assertEquals(sampler.latestVm("s2"), null);
  await sampler.stop();
});
