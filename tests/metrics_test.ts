/**
 * Metrics (issue 13, item 1) on a two-node cluster with the test guest under TCG on n2, asked
 * through n1 (the VM's stats are answered by its host, forwarded there). The host
 * samples every second here (NOVACTL_METRICS_INTERVAL_MS; 10 s by default). The guest idles
 * for a while after boot, then spins a busy loop; the console says which phase it is in (the
 * host keeps the guest agent's only connection, so the test cannot drive the guest there):
 *
 * - `vm stats -o json` shows the VM's CPU higher while it spins than while it idles, and so
 *   does `novactl_vm_cpu_percent{vm}` in /metrics (compared busy vs idle, no wall-clock bound);
 * - the history answers with the asked step, in points that step apart, with the documented
 *   fields; an unknown `step` or `since` is 400 naming the field (and exit 1 in the CLI);
 * - the host's stats and `top --once` list the VM; only its host exports its series, which
 *   leave /metrics with the VM; only the leader exports the cluster's VMs by state.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, step } from "./support/api.ts";
import { fetchConsole, guestImportArgs, scriptUserData, testGuest } from "../bench/lib/guest.ts";
import { clusterFetch } from "../bench/lib/tls.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/**
 * The guest's side: idle, then a busy loop for ever. The idle phase is long enough for the
 * idle samples; the test checks that they were all taken before the spin began.
 */
const IDLE_SECONDS = 45;
const SPINNER = `echo NV-IDLE
sleep ${IDLE_SECONDS}
echo NV-SPINNING
while :; do :; done
`;

const VM_FIELDS = [
  "cpuPercent",
  "memoryBytes",
  "balloonBytes",
  "diskReadBytesPerSec",
  "diskWriteBytesPerSec",
  "diskReadOpsPerSec",
  "diskWriteOpsPerSec",
  "netRxBytesPerSec",
  "netTxBytesPerSec",
];

interface Stats {
  vm: string;
  node: string;
  state: string | null;
  current: ({ t: string } & Record<string, number | null>) | null;
  since: string;
  step: string;
  stepSeconds: number;
  points: ({ t: string } & Record<string, number | null>)[];
}

const average = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

testWithTimeout({
  name: "metrics: a VM's CPU goes up while its guest spins; history, /metrics, top, bad input",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const cluster = new NovactlCluster({
    env: { NOVACTL_ACCEL: "tcg", NOVACTL_METRICS_INTERVAL_MS: "1000" },
  });
  /** Where the client asks: n1, not the VM's host. */
  const url = () => cluster.nodes[0].url;
  /** The VM's host. */
  const host = () => cluster.nodes[1];
  const run = (...args: string[]) =>
    cli([...args, "--server", url(), "--token", cluster.adminToken]);
  const ok = async (...args: string[]) => {
    const r = await run(...args);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const stats = async (...extra: string[]) =>
    JSON.parse(await ok("vm", "stats", "m1", "-o", "json", ...extra)) as Stats;
  /** The VM's stats through the API (quicker than the CLI between samples). */
  const apiStats = async () =>
    (await api<Stats>(`${url()}/api/v1/vms/m1/stats`, { token: cluster.adminToken })).body;
  /** CPU of `n` successive samples (each newer than the last). */
  const cpuSamples = async (n: number, after = "") => {
    const out: number[] = [];
    let last = after;
    while (out.length < n) {
      const s = await eventually("a newer sample", async () => {
        const cur = (await apiStats()).current;
        return cur && cur.t > last ? cur : undefined;
      }, 60_000);
      last = s.t;
      out.push(s.cpuPercent!);
    }
    return { cpu: out, last };
  };
  const consoleText = () => fetchConsole(url(), cluster.adminToken, "m1");
  const metricsOf = async (base: string) => await (await clusterFetch(`${base}/metrics`)).text();
  const metricsText = () => metricsOf(host().url);
  const promCpu = async () => {
    const m = /novactl_vm_cpu_percent\{vm="m1"\} ([\d.e+-]+)/.exec(await metricsText());
    return m ? Number(m[1]) : null;
  };
  let idle = 0;
  let idlePromCpu = 0;
  let lastIdle = "";

  try {
    await step(t, "a running guest that idles", async () => {
      await cluster.start(2, { voters: 1 }); // n2 stays a learner (an even count has no spare)
      await ok(...guestImportArgs(guest, "guest"));
      const dir = await Deno.makeTempDir();
      try {
        await Deno.writeTextFile(`${dir}/ud.yaml`, scriptUserData(SPINNER));
        await ok(
          ...["vm", "create", "m1", "--image", "guest", "--memory", "128M", "--disk-size", "1"],
          ...["--node", host().name],
          ...["--user-data", `${dir}/ud.yaml`, "--wait"],
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      // Booted (the boot itself is busy under TCG) and in its idle phase.
      await eventually("the guest idles", async () => /NV-IDLE/.test(await consoleText()), 180_000);
    });

    await step(t, "idle: vm stats and /metrics show the VM's CPU, memory and fields", async () => {
      const settle = await cpuSamples(2); // the end of the boot may still be in the first ones
      const s = await cpuSamples(5, settle.last);
      idle = average(s.cpu);
      lastIdle = s.last;
      idlePromCpu = (await promCpu())!;
      const r = await stats();
      assertEquals([r.vm, r.node, r.state], ["m1", host().name, "running"], "answered by its host");
      for (const f of ["t", ...VM_FIELDS]) assert(f in r.current!, `current.${f}: ${f}`);
      assert(r.current!.memoryBytes! > 16 * 2 ** 20, `QEMU's RSS ${r.current!.memoryBytes}`);
      const text = await metricsText();
      assert(/novactl_vm_cpu_seconds_total\{vm="m1"\} [\d.]+/.test(text), "cpu seconds");
      assert(/novactl_vm_memory_resident_bytes\{vm="m1"\} \d+/.test(text), "rss");
      // The guest's kernel read its root disk's partition table at least (query-blockstats).
      const rootRead = /novactl_vm_disk_read_bytes_total\{vm="m1",disk="root"\} (\d+)/.exec(text);
      assert(rootRead && Number(rootRead[1]) > 0, `root disk reads: ${rootRead?.[0]}`);
      assert(/novactl_host_vms 1\b/.test(text), "the host's VM count");
      assert(/novactl_host_cpu_percent [\d.]+/.test(text), "the host's CPU");
      assert(!(await metricsOf(url())).includes('vm="m1"'), "only the VM's host exports it");
      assert(
        !/NV-SPINNING/.test(await consoleText()),
        `the guest began spinning before the idle samples were taken (idle ${IDLE_SECONDS} s)`,
      );
    });

    await step(t, "busy: the guest spins and the VM's CPU goes up", async () => {
      await eventually(
        "the guest spins",
        async () => /NV-SPINNING/.test(await consoleText()),
        120_000,
      );
      // Samples taken after the spin started: skip the first, which may straddle the start.
      const spinning = (await apiStats()).current!.t;
      const first = await cpuSamples(1, spinning > lastIdle ? spinning : lastIdle);
      const busy = average((await cpuSamples(5, first.last)).cpu);
      console.log(`VM CPU: idle ${idle.toFixed(1)} %, busy ${busy.toFixed(1)} %`);
      assert(busy > 2 * idle && busy - idle > 10, `busy ${busy} % vs idle ${idle} %`);
      const prom = (await promCpu())!;
      console.log(`/metrics novactl_vm_cpu_percent: idle ${idlePromCpu}, busy ${prom}`);
      assert(prom > 2 * idlePromCpu && prom - idlePromCpu > 10, `/metrics: ${prom}`);
    });

    await step(t, "history answers with the asked step and the documented fields", async () => {
      for (const [asked, seconds] of [["10s", 10], ["1m", 60]] as const) {
        const r = await stats("--since", "10m", "--step", asked);
        assertEquals([r.step, r.stepSeconds], [asked, seconds]);
        assert(r.points.length >= 1, `points at ${asked}`);
        for (const p of r.points) {
          assertEquals(Date.parse(p.t) % (seconds * 1000), 0, `${p.t} on a ${asked} boundary`);
          for (const f of VM_FIELDS) assert(f in p, `point field ${f}`);
        }
        const ts = r.points.map((p) => Date.parse(p.t));
        assert(ts.every((x, i) => i === 0 || x - ts[i - 1] >= seconds * 1000), `${ts}`);
        assert(Date.parse(r.since) <= ts[0]);
      }
      // The busy points stand out in the 10-second history too.
      const r = await stats("--since", "10m", "--step", "10s");
      const cpus = r.points.map((p) => p.cpuPercent!);
      assert(Math.max(...cpus) > 2 * Math.min(...cpus), `history CPU ${cpus}`);
    });

    await step(t, "bad since or step: 400 naming the field, exit 1 in the CLI", async () => {
      for (const [q, field] of [["step=7s", "step"], ["since=soon", "since"]]) {
        const r = await api<{ error: { code: string; details: { fields: { field: string }[] } } }>(
          `${url()}/api/v1/vms/m1/stats?${q}`,
          { token: cluster.adminToken },
        );
        assertEquals(r.status, 400, q);
        assertEquals(r.body.error.details.fields[0].field, field);
        const n = await api(`${url()}/api/v1/nodes/${cluster.nodes[0].name}/stats?${q}`, {
          token: cluster.adminToken,
        });
        assertEquals(n.status, 400, `node stats ${q}`);
      }
      const r = await run("vm", "stats", "m1", "--step", "7s");
      assertEquals(r.code, 1);
      assert(/step/.test(r.stderr), r.stderr);
    });

    await step(t, "the host's stats and top list the VM", async () => {
      const name = host().name;
      const n = await api<
        { node: string; current: Record<string, number>; vms: { name: string }[] }
      >(
        `${url()}/api/v1/nodes/${name}/stats?since=5m&step=10s`,
        { token: cluster.adminToken },
      );
      assertEquals(n.status, 200);
      assertEquals(n.body.node, name, "answered by that node");
      assertEquals(n.body.vms.map((v) => v.name), ["m1"]);
      assertEquals(n.body.current.vms, 1);
      const other = await api<{ node: string; vms: unknown[] }>(
        `${url()}/api/v1/nodes/${cluster.nodes[0].name}/stats`,
        { token: cluster.adminToken },
      );
      assertEquals([other.body.node, other.body.vms], [cluster.nodes[0].name, []]);
      assert(n.body.current.memoryTotalBytes > 0 && n.body.current.cpuPercent > 0);
      const table = await ok("vm", "stats", "m1", "--since", "3m", "--step", "1m");
      assert(/^cpu%\s+\d/m.test(table) && /^TIME\s+CPU%\s+MEM/m.test(table), table);
      const top = await ok("top", "--once");
      assert(/^NAME\s+NODE\s+CPU%/m.test(top) && /^m1\s/m.test(top), top);
      const hosts = await ok("top", "--nodes", "--once");
      for (const n of cluster.nodes) assert(new RegExp(`^${n.name}\\s`, "m").test(hosts), hosts);
      console.log(`${table}\n${top}\n${hosts}`);
      const json = JSON.parse(await ok("top", "--once", "-o", "json")) as {
        vms: { name: string; cpuPercent: number }[];
      };
      assertEquals(json.vms.map((v) => v.name), ["m1"]);
    });

    await step(t, "the leader alone exports the cluster's VMs by state", async () => {
      const status = JSON.parse(await ok("cluster", "status", "-o", "json")) as { leader: string };
      for (const n of cluster.nodes) {
        const has = /novactl_cluster_vms\{state="running"\} 1\b/.test(await metricsOf(n.url));
        assertEquals(has, n.name === status.leader, `${n.name} (leader ${status.leader})`);
      }
    });

    await step(t, "the VM's series leave /metrics with the VM", async () => {
      await ok("vm", "delete", "m1", "--force", "--wait");
      await eventually("no m1 series", async () => !(await metricsText()).includes('vm="m1"'));
    });
  } finally {
    await cluster.stop();
  }
});
