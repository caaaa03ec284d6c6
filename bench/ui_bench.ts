/**
 * Dashboard load (issue 13, Performance): a 3-node cluster of simulated hosts
 * (`--simulated-host`) holding 1,000 VMs, and the VM list page opened cold in Debian's
 * Chromium (a new browser context each time: empty cache, the token already in
 * sessionStorage as after sign-in). Figures from the browser's performance API:
 *
 * - navigation: `responseEnd`, `domContentLoadedEventEnd` and `loadEventEnd` of the page's
 *   navigation timing entry;
 * - list rendered: the `novactl:vm-list-rendered` mark the page sets once the first page of
 *   VMs is on screen (ui/src/pages.tsx), the figure the goal is about;
 * - bytes: the gzip size of every script, style and page in ui/dist (ui/dist/manifest.json),
 *   and what the browser transferred for the first load.
 *
 * Goals: list rendered ≤ 1 s, assets ≤ 500 KB gzipped. Printed, not asserted.
 *
 * Usage: deno task bench:ui [--vms 1000] [--loads 7] [--out FILE] [--screenshot FILE.png]
 */
import { NovactlCluster } from "./lib/novactl_cluster.ts";
import { parseFlags, toPositiveInt } from "./lib/flags.ts";
import { type Figure, figure } from "./lib/figures.ts";
import { runMeta } from "./lib/run_meta.ts";
import { defaultOut, installSignalTeardown, writeResult } from "./lib/systems.ts";
import { createVms, importTinyKernel, simulatedHostArgs } from "./lib/simulated.ts";
import { openBrowser } from "../tests/support/browser.ts";
import { buildUi, DIST_DIR, type UiManifest } from "../ui/mod.ts";

const GOAL_MS = 1000;
const GOAL_GZIP_BYTES = 500_000;

interface Load {
  responseEnd: number;
  domContentLoaded: number;
  load: number;
  listRendered: number;
  transferredBytes: number;
  rows: number;
}

async function main(): Promise<void> {
  const flags = parseFlags(Deno.args, new Set());
  const vms = toPositiveInt("vms", flags.get("vms") ?? "1000");
  const loads = toPositiveInt("loads", flags.get("loads") ?? "7");
  const out = flags.get("out") ?? defaultOut("ui");
  const screenshot = flags.get("screenshot");
  installSignalTeardown();

  // Measure the page as it is now, not an old build.
  const manifest: UiManifest = await buildUi(DIST_DIR);
  console.log(`-- ui built: ${(manifest.gzipBytes / 1024).toFixed(1)} KiB gzipped`);

  const cluster = new NovactlCluster({ extraNodeArgs: simulatedHostArgs(65_536, 1 << 30) });
  const { browser, context: first } = await openBrowser();
  await first.close();
  try {
    await cluster.start(3);
    const meta = await runMeta("ui", { dataDir: cluster.baseDir, runs: loads });
    await importTinyKernel(cluster, "k");
    console.log(`-- creating ${vms} VMs`);
    const t0 = performance.now();
    await createVms(cluster, vms, 32, (i) => ({
      name: `vm-${String(i).padStart(4, "0")}`,
      image: "k",
      cpus: 1,
      memoryMiB: 64,
      labels: { app: `app${i % 10}` },
    }));
    console.log(`   ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const url = `${cluster.nodes[1].url}/ui/vms`;
    const results: Load[] = [];
    for (let i = 0; i < loads; i++) {
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      await context.addInitScript((token: string) => {
        sessionStorage.setItem("novactl.token", token);
      }, cluster.adminToken);
      const page = await context.newPage();
      await page.goto(url, { waitUntil: "load" });
      await page.locator("tr[data-vm]").first().waitFor({ timeout: 30_000 });
      // Runs in the page (browser globals), hence a string rather than a typed function here.
      const m = await page.evaluate<Load>(`(() => {
        const nav = performance.getEntriesByType("navigation")[0];
        const mark = performance.getEntriesByName("novactl:vm-list-rendered")[0];
        const resources = performance.getEntriesByType("resource");
        return {
          responseEnd: nav.responseEnd,
          domContentLoaded: nav.domContentLoadedEventEnd,
          load: nav.loadEventEnd,
          listRendered: mark ? mark.startTime : NaN,
          transferredBytes: nav.transferSize +
            resources.reduce((s, r) => s + (r.transferSize || 0), 0),
          rows: document.querySelectorAll("tr[data-vm]").length,
        };
      })()`);
      results.push(m);
      if (screenshot && i === 0) await page.screenshot({ path: screenshot });
      console.log(
        `   load ${i + 1}: list rendered at ${m.listRendered.toFixed(0)} ms ` +
          `(DOMContentLoaded ${m.domContentLoaded.toFixed(0)} ms, ${m.rows} rows, ` +
          `${(m.transferredBytes / 1024).toFixed(0)} KiB transferred)`,
      );
      await context.close();
    }
    const fig = (f: (l: Load) => number): Figure => figure(results.map(f), 1);
    const listRendered = fig((l) => l.listRendered);
    const result = {
      meta: { ...meta, date: new Date().toISOString() },
      setup: { nodes: 3, vms, loads, browser: "Debian chromium, headless, cold cache" },
      ms: {
        responseEnd: fig((l) => l.responseEnd),
        domContentLoaded: fig((l) => l.domContentLoaded),
        load: fig((l) => l.load),
        listRendered,
      },
      bytes: {
        assetsGzip: manifest.gzipBytes,
        firstLoadTransferred: fig((l) => l.transferredBytes),
        files: manifest.files,
      },
      goals: {
        listRenderedMs: GOAL_MS,
        assetsGzipBytes: GOAL_GZIP_BYTES,
        met: listRendered.median <= GOAL_MS && manifest.gzipBytes <= GOAL_GZIP_BYTES,
      },
    };
    console.log(
      `\nVM list, ${vms} VMs, cold: rendered at ${listRendered.median} ms median ` +
        `(min ${listRendered.min}, max ${listRendered.max}; goal ≤ ${GOAL_MS} ms)`,
    );
    console.log(
      `assets: ${(manifest.gzipBytes / 1000).toFixed(1)} kB gzipped ` +
        `(goal ≤ ${GOAL_GZIP_BYTES / 1000} kB); first load transferred ` +
        `${(result.bytes.firstLoadTransferred.median / 1000).toFixed(1)} kB`,
    );
    await writeResult(out, result);
  } finally {
    await browser.close().catch(() => {});
    await cluster.stop();
  }
}

if (import.meta.main) await main();
