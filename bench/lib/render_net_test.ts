import { assert } from "../../core/testing/assert.ts";
import { figure } from "./figures.ts";
import { renderNet } from "./render.ts";
import type { NetBenchResult } from "../net_bench.ts";
import type { RunMeta } from "./run_meta.ts";

const META: RunMeta = {
  benchmark: "net",
  command: "deno task bench:net --case dhcp --samples 3",
  commit: "abc1234",
  date: "2026-12-04T04:00:00.000Z",
  fsType: "tmpfs",
  runs: 3,
  cpus: 2,
  loadAvgBefore: 1.5,
  deno: "2.9.6",
};

const pct = (values: number[]) => ({ ...figure(values, 1), p50: figure(values).median, p99: 0 });
const spans = (control: number, launch: number, boot: number[], dhcp: number) => ({
  control: figure([control, control + 2, control + 4], 1),
  launch: figure([launch, launch + 1, launch + 2], 1),
  boot: figure(boot, 1),
  dhcp: figure([dhcp, dhcp, dhcp], 1),
});

/** A DHCP result whose boot spans spread by hundreds of ms and whose other spans agree. */
function dhcpResult(manager: number[]): NetBenchResult {
  return {
    meta: META,
    dhcp: {
      meta: META,
      setup: { hosts: 2, guestMemoryMiB: 128, samples: 3, order: "novactl, bare, plain bare" },
      novactlMs: pct([2700, 3100, 2900]),
      bareMs: pct([2650, 2800, 3200]),
      overheadMs: pct([50, 300, -300]),
      novactlDiscoverToAckMs: figure([20, 20, 20], 1),
      bareDiscoverToAckMs: figure([20, 20, 20], 1),
      novactlSpansMs: spans(47, 40, [2593, 2993, 2793], 20),
      bareSpansMs: spans(43, 38, [2549, 2699, 3099], 20),
      spanOverheadMs: {
        control: figure([4, 4, 4], 1),
        launch: figure([2, 2, 2], 1),
        boot: figure([44, 294, -306], 1),
        dhcp: figure([0, 0, 0], 1),
      },
      managerOverheadMs: figure(manager, 1),
      anchorDevices: { consoles: true, display: "vga", diskPorts: true },
      plainSpansMs: spans(42, 30, [2400, 2500, 2450], 25),
      plainOverheadMs: pct([250, 350, 300]),
      devicesBootMs: figure([149, 199, 649], 1),
      goalOverheadMs: 100,
    },
  };
}

Deno.test("renderNet: the DHCP case's spans, per side and per pair, and the goal without the boot", () => {
  const text = renderNet(dhcpResult([6, 6, 6]));
  assert(text.includes("| start → QEMU up (its QMP socket made)"), text);
  assert(
    /\| vCPU runs → first DHCPDISCOVER \(the guest's boot\) +\| +2,793 \(2,593–2,993\) \|/.test(
      text,
    ),
    text,
  );
  assert(/\| all but the guest's boot +\| +\| +\| +\| +6 \|/.test(text), text);
  assert(
    text.includes("novactl's overhead is 6 ms (6–6 ms over 3 pairs): goal ≤ 100 ms met."),
    text,
  );
  assert(text.includes("the end-to-end figure alone cannot resolve it"), text);
  assert(text.includes("lengthen the guest's boot by 199 ms"), text);
  assert(/\| +plain anchor \|/.test(text), text);
});

Deno.test("renderNet: a split overhead over the goal, or spread wider than it, is said so", () => {
  const over = renderNet(dhcpResult([150, 160, 170]));
  assert(over.includes("goal ≤ 100 ms **not met**."), over);
  // Every pair within the goal resolves it however wide they spread; one beyond it does not.
  const within = renderNet(dhcpResult([-180, 20, 90]));
  assert(within.includes("(-180–90 ms over 3 pairs): goal ≤ 100 ms met."), within);
  const wide = renderNet(dhcpResult([-80, 20, 190]));
  assert(wide.includes("goal ≤ 100 ms met, but its pairs spread wider than the goal."), wide);
});
