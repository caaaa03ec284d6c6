/**
 * Renders the tables of BENCHMARKS.md from the raw results in `bench/results/*.json`.
 *
 * Each benchmark owns one block of BENCHMARKS.md between marker comments,
 * `<!-- bench:NAME:begin -->` … `<!-- bench:NAME:end -->`; only those blocks are
 * rewritten, the prose around them is left alone. A block starts with the run's
 * provenance (commit, filesystem, repetitions, date), from the result's `meta`
 * (bench/lib/run_meta.ts). A result without `meta` predates provenance: its
 * figures are withheld, with a note saying how to regenerate them.
 *
 * Figures are {@linkcode Figure}s (median, min, max, n, p99 only when n ≥ 100).
 * Results of benchmarks this module has no dedicated table for are rendered by
 * finding every figure in the JSON, labelled by its path (or a sibling `label`).
 */

import { type Figure, isFigure } from "./figures.ts";
import type { ComparisonRatio, ComparisonResult, ComparisonRow, TlsCost } from "./comparison.ts";
import type { RunMeta } from "./run_meta.ts";
import type { NetBenchResult } from "../net_bench.ts";

/** A benchmark section: its marker name and how its result becomes markdown. */
export interface Section {
  name: string;
  render: (result: Record<string, unknown>) => string;
}

/** Every benchmark with a section in BENCHMARKS.md, in the order they appear there. */
export const SECTIONS: readonly Section[] = [
  { name: "raft", render: (r) => renderComparison(r as unknown as ComparisonResult) },
  { name: "api", render: (r) => renderComparison(r as unknown as ComparisonResult) },
  { name: "scale", render: renderFigures },
  { name: "vm", render: renderFigures },
  { name: "scheduler", render: (r) => renderScheduler(r as unknown as SchedulerResult) },
  { name: "ha", render: renderFigures },
  { name: "migrate", render: renderFigures },
  { name: "net", render: (r) => renderNet(r as unknown as NetBenchResult) },
  { name: "backup", render: renderFigures },
  { name: "events", render: renderFigures },
];

/** Thrown when BENCHMARKS.md's markers are missing, unbalanced or unknown. */
export class MarkerError extends Error {}

/** Thrown when a result file with provenance lacks what its section's table needs. */
export class ResultShapeError extends Error {}

// ---------------------------------------------------------------- documents

/**
 * Rewrites every marked block of `markdown` from `results` (section name → parsed
 * JSON, or undefined when the file is missing).
 *
 * @throws {MarkerError} when a section has no markers, or markers name no section.
 */
export function renderDocument(
  markdown: string,
  results: ReadonlyMap<string, unknown>,
): string {
  const known = new Set(SECTIONS.map((s) => s.name));
  for (const match of markdown.matchAll(/<!-- bench:([a-z0-9-]+):(begin|end) -->/g)) {
    if (!known.has(match[1])) throw new MarkerError(`unknown marker ${match[0]}`);
  }
  let out = markdown;
  for (const section of SECTIONS) {
    out = replaceBlock(out, section.name, renderSection(section, results.get(section.name)));
  }
  return out;
}

function replaceBlock(markdown: string, name: string, body: string): string {
  const begin = `<!-- bench:${name}:begin -->`;
  const end = `<!-- bench:${name}:end -->`;
  const from = markdown.indexOf(begin);
  const to = markdown.indexOf(end);
  if (from < 0 || to < 0 || to < from) {
    throw new MarkerError(`BENCHMARKS.md needs one ${begin} … ${end} block`);
  }
  if (markdown.indexOf(begin, from + 1) >= 0 || markdown.indexOf(end, to + 1) >= 0) {
    throw new MarkerError(`BENCHMARKS.md has more than one bench:${name} block`);
  }
  return `${markdown.slice(0, from + begin.length)}\n\n${body.trim()}\n\n${markdown.slice(to)}`;
}

/** One section's block: provenance, then its tables; or a note when there is nothing to show. */
export function renderSection(section: Section, result: unknown): string {
  const file = `bench/results/${section.name}.json`;
  const rerun = `run \`deno task bench:${section.name}\` to produce it`;
  if (result === undefined) return `_No result: \`${file}\` is missing; ${rerun}._`;
  const record = result as Record<string, unknown>;
  if (!isRunMeta(record.meta)) {
    return `_No figures: \`${file}\` predates run provenance (no commit, filesystem or run ` +
      `count recorded); ${rerun}._`;
  }
  return `${provenance(record.meta, file)}\n\n${renderOrExplain(section, record, file)}`;
}

/** A result of the wrong shape stops the report with the file's name, rather than a bare TypeError. */
function renderOrExplain(section: Section, result: Record<string, unknown>, file: string): string {
  try {
    return section.render(result);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new ResultShapeError(`${file} is not the shape bench:report renders: ${why}`);
  }
}

function isRunMeta(value: unknown): value is RunMeta {
  const meta = value as Partial<RunMeta> | undefined;
  return typeof meta?.commit === "string" && typeof meta.date === "string";
}

/** "Run: commit abc123, ext4, 3 runs, 2026-12-01 (…)" */
export function provenance(meta: RunMeta, file: string): string {
  const runs = `${meta.runs} run${meta.runs === 1 ? "" : "s"}`;
  const load = Number.isFinite(meta.loadAvgBefore)
    ? `, load average ${meta.loadAvgBefore.toFixed(2)} at start`
    : "";
  return `Run: commit ${meta.commit}, ${meta.fsType}, ${runs}, ${meta.date.slice(0, 10)} ` +
    `(${meta.cpus} CPUs${load}; \`${meta.command}\`; raw: \`${file}\`).`;
}

// ---------------------------------------------------------------- novactl vs etcd

/** `bench:raft` and `bench:api`: one row per case, client count and system. */
export function renderComparison(result: ComparisonResult): string {
  const manyCases = new Set(result.rows.map((r) => r.case)).size > 1;
  const ratios = result.ratios ?? [];
  const anchor = ratios[0]?.anchor ?? "etcd";
  const headers = [
    ...(manyCases ? ["case"] : []),
    "clients",
    "system",
    "ops/s median (min–max)",
    "p50 ms median (min–max)",
    "p99 ms median (min–max)",
    "errors",
    `novactl/${anchor} (medians)`,
    ...(result.tlsCost?.length ? ["TLS cost vs plain HTTP (throughput, p50)"] : []),
  ];
  const cells = orderRows(result.rows).map((row) => [
    ...(manyCases ? [row.case] : []),
    String(row.clients),
    `${row.system} ${versionOf(result, row.system)}`.trim(),
    spread(row.writesPerSec),
    spread(row.p50Ms),
    row.p99Ms ? spread(row.p99Ms) : `max ${spread(row.maxMs)} (n < 100)`,
    String(row.errors),
    ratioCell(ratios, row),
    ...(result.tlsCost?.length ? [tlsCostCell(result.tlsCost, row)] : []),
  ]);
  const leftColumns = manyCases ? 3 : 2;
  const align = headers.map((_, i): Align => (i < leftColumns ? "left" : "right"));
  return table(headers, cells, align);
}

function orderRows(rows: readonly ComparisonRow[]): ComparisonRow[] {
  const cases = [...new Set(rows.map((r) => r.case))];
  const rank = (
    system: string,
  ) => (system === "novactl" ? 0 : system.startsWith("novactl") ? 1 : 2);
  return [...rows].sort((a, b) =>
    cases.indexOf(a.case) - cases.indexOf(b.case) || a.clients - b.clients ||
    rank(a.system) - rank(b.system) || a.system.localeCompare(b.system)
  );
}

function versionOf(result: ComparisonResult, system: string): string {
  return system.startsWith("novactl") ? "" : result.versions?.[system] ?? "";
}

function ratioCell(ratios: readonly ComparisonRatio[], row: ComparisonRow): string {
  if (row.system !== "novactl") return "";
  const ratio = ratios.find((r) => r.case === row.case && r.clients === row.clients);
  return ratio ? `${ratio.ratio.toFixed(2)}×` : "";
}

function tlsCostCell(costs: readonly TlsCost[], row: ComparisonRow): string {
  if (row.system !== "novactl") return "";
  const c = costs.find((c) => c.case === row.case && c.clients === row.clients);
  if (!c) return "";
  const sign = (v: number) => (v > 0 ? "+" : "");
  return `${sign(-c.throughputPct)}${(-c.throughputPct).toFixed(1)} %, ${sign(c.p50Ms)}${
    c.p50Ms.toFixed(2)
  } ms`;
}

// ---------------------------------------------------------------- scheduler

/** One measured path of `bench:scheduler`. */
export interface SchedulerPath {
  label: string;
  decisionsPerSec: Figure;
}

/** What `bench:scheduler` writes (bench/scheduler_bench.ts). */
export interface SchedulerResult {
  meta: RunMeta;
  state: { hosts: number; readyHosts: number; vms: number; groups: number };
  /** The path the leader runs, first; then its anchors and variants. */
  paths: SchedulerPath[];
  indexBuildMs: Figure;
}

export function renderScheduler(result: SchedulerResult): string {
  const s = result.state;
  const rows = result.paths.map((p) => [
    p.label,
    spread(p.decisionsPerSec),
    String(p.decisionsPerSec.n),
  ]);
  rows.push([
    `index build (${number(s.hosts)} hosts, ${number(s.vms)} VMs), ms`,
    spread(result.indexBuildMs),
    String(result.indexBuildMs.n),
  ]);
  return table(["path", "decisions/s median (min–max)", "reps"], rows, [
    "left",
    "right",
    "right",
  ]);
}

// ---------------------------------------------------------------- networking

/**
 * `bench:net`: one table per case the file holds (security groups, migration, DHCP lease, TCP
 * throughput), each under the command, commit and date of the run that measured it (a run of
 * one case keeps the others' figures from earlier runs).
 */
export function renderNet(result: NetBenchResult): string {
  const parts: string[] = [];
  const ms = (f: Figure & { p50?: number; p99?: number }) => [
    String(f.n),
    number(f.p50 ?? f.median),
    number(f.p99 ?? f.max),
    spread(f),
  ];
  const msHeaders = ["measure", "n", "p50 ms", "p99 ms", "median (min–max) ms"];
  const msAlign: Align[] = ["left", "right", "right", "right", "right"];
  const goal = (met: boolean) => (met ? "met" : "**not met**");

  const sg = result.securityGroups;
  if (sg && result.setup) {
    const s = result.setup;
    parts.push(
      `**Security-group rule change → enforced on every host** (${s.hosts} hosts, ${s.voters} ` +
        `voters, ${s.ports} ports, ${s.groups} groups, ${number(s.rules)} rules, ${s.changes} ` +
        `changes). ${caseRun(result.meta)}`,
      table(msHeaders, [
        [
          "novactl: rule POST → its flows in br-int on every host",
          ...ms(sg.ruleToEnforcedAllHostsMs),
        ],
        ["anchor: `ovn-nbctl acl-add` → its flows on every host", ...ms(sg.bareOvnAclToEnforcedMs)],
        ["novactl: rule POST → API answer", ...ms(sg.ruleApiMs)],
      ], msAlign),
      `Goal p50 ≤ ${sg.goalP50Ms} ms: ${goal(sg.ruleToEnforcedAllHostsMs.p50 <= sg.goalP50Ms)}.`,
    );
  }
  const m = result.migration;
  if (m) {
    parts.push(
      `**Packets lost during live migration** (${m.setup.hosts} hosts, a ping every ` +
        `${m.setup.pingIntervalMs} ms, ${m.setup.guestMemoryMiB} MiB guest, ` +
        `${m.setup.migrations} migrations). ${caseRun(m.meta)}`,
      table(["measure", "n", "median (min–max)"], [
        ["pings lost per migration", String(m.lostPackets.n), spread(m.lostPackets)],
        ["longest outage, pings", String(m.longestOutagePings.n), spread(m.longestOutagePings)],
        ["migration, ms", String(m.migrationMs.n), spread(m.migrationMs)],
        ["guest paused, ms", String(m.guestPausedMs.n), spread(m.guestPausedMs)],
      ], ["left", "right", "right"]),
      `Goal ≤ ${m.goalLost} lost: ${m.withinGoal} of ${m.lostPackets.n} migrations within it.`,
    );
    if (m.stalled) {
      parts.push(
        `Migration ${m.stalled.migration} (→ ${m.stalled.to}) never got its pings back and ended ` +
          `the run; the target guest's console ended with:\n\n\`\`\`\n${m.stalled.guestConsoleTail}\n\`\`\``,
      );
    }
  }
  const d = result.dhcp;
  if (d) {
    parts.push(
      `**VM create with a NIC → guest DHCP lease** (${d.setup.hosts} hosts, ` +
        `${d.setup.guestMemoryMiB} MiB guest, ${d.setup.samples} pairs, ${d.setup.order}). ` +
        caseRun(d.meta),
      table(msHeaders, [
        ["novactl: `POST /api/v1/vms` → DHCPACK on the guest's tap", ...ms(d.novactlMs)],
        ["anchor: port, tap and QEMU by hand → DHCPACK", ...ms(d.bareMs)],
        ["overhead (novactl − anchor, per pair)", ...ms(d.overheadMs)],
        ["novactl: first DHCPDISCOVER → DHCPACK", ...ms(d.novactlDiscoverToAckMs)],
        ["anchor: first DHCPDISCOVER → DHCPACK", ...ms(d.bareDiscoverToAckMs)],
      ], msAlign),
      `End to end, goal overhead ≤ ${d.goalOverheadMs} ms (p50): ${
        goal(d.overheadMs.p50 <= d.goalOverheadMs)
      }${
        d.overheadMs.max - d.overheadMs.min > d.goalOverheadMs
          ? ", but the pairs spread wider than the goal (the guests' boot varies), so the " +
            "end-to-end figure alone cannot resolve it"
          : ""
      }. With n < 100 the p99 is the largest sample.`,
    );
    if (d.novactlSpansMs && d.bareSpansMs && d.spanOverheadMs && d.managerOverheadMs) {
      const labels: Record<keyof typeof d.novactlSpansMs, string> = {
        control: "start → QEMU up (its QMP socket made)",
        launch: "QEMU up → the guest's vCPU runs",
        boot: "vCPU runs → first DHCPDISCOVER (the guest's boot)",
        dhcp: "first DHCPDISCOVER → DHCPACK (OVN)",
      };
      const plain = d.plainSpansMs;
      const rows = (Object.keys(labels) as (keyof typeof labels)[]).map((k) => [
        labels[k],
        spread(d.novactlSpansMs![k]),
        spread(d.bareSpansMs![k]),
        ...(plain ? [spread(plain[k])] : []),
        spread(d.spanOverheadMs![k]),
      ]);
      rows.push([
        "all but the guest's boot",
        "",
        "",
        ...(plain ? [""] : []),
        spread(d.managerOverheadMs),
      ]);
      const m = d.managerOverheadMs;
      const resolves = m.max - m.min < d.goalOverheadMs || m.max <= d.goalOverheadMs;
      parts.push(
        "The same starts split at points every side shares (ms, median (min–max)):",
        table(
          [
            "span",
            "novactl",
            "anchor",
            ...(plain ? ["plain anchor"] : []),
            "novactl − anchor, per pair",
          ],
          rows,
          ["left", "right", "right", ...(plain ? ["right" as const] : []), "right"],
        ),
        `Without the guest's own boot (${
          d.anchorDevices?.display
            ? "the same kernel on the same virtual hardware on both sides"
            : "the same kernel; the anchor's guest without novactl's serial socket, VNC, " +
              "display and PCIe ports"
        }), novactl's overhead is ${number(m.median)} ms (${number(m.min)}–${
          number(m.max)
        } ms over ${m.n} pairs): goal ≤ ${d.goalOverheadMs} ms ${
          goal(m.median <= d.goalOverheadMs)
        }${resolves ? "" : ", but its pairs spread wider than the goal"}.`,
      );
      if (d.devicesBootMs && d.plainOverheadMs) {
        parts.push(
          `The plain anchor is the same guest without novactl's devices (serial to a file, no ` +
            `VNC or display, no disk hot-plug ports). Those devices lengthen the guest's boot by ` +
            `${number(d.devicesBootMs.median)} ms (median of the anchor's boot less the plain ` +
            `anchor's, ${number(d.devicesBootMs.min)}–${number(d.devicesBootMs.max)} ms); ` +
            `end to end, novactl − plain anchor is ${spread(d.plainOverheadMs)} ms.`,
        );
      }
    }
  }
  const t = result.tcp;
  if (t) {
    parts.push(
      `**Guest-to-guest TCP throughput across hosts** (${t.setup.hosts} hosts, ` +
        `${t.setup.guestMemoryMiB} MiB guests, ${t.setup.samples} samples a side, each a ` +
        `${t.setup.windowS} s window, ${t.setup.order}; ${t.setup.tool}). ${caseRun(t.meta)}`,
      table(["measure", "n", "median (min–max)"], [
        [
          "novactl: guests on its overlay network, Mbit/s",
          String(t.novactlMbitPerS.n),
          spread(t.novactlMbitPerS),
        ],
        [
          "anchor: the same guests on OVN wired by hand, Mbit/s",
          String(t.bareMbitPerS.n),
          spread(t.bareMbitPerS),
        ],
        ...(t.bareAclMbitPerS
          ? [[
            "anchor with novactl's ACLs (port group, stateful), Mbit/s",
            String(t.bareAclMbitPerS.n),
            spread(t.bareAclMbitPerS),
          ]]
          : []),
        ["novactl / anchor, per pair", String(t.ratio.n), spread(t.ratio)],
        ...(t.ratioToBareAcl
          ? [[
            "novactl / anchor with ACLs, per sample",
            String(t.ratioToBareAcl.n),
            spread(t.ratioToBareAcl),
          ]]
          : []),
      ], ["left", "right", "right"]),
      `novactl / anchor (medians): ${t.ratioOfMedians.toFixed(2)}×; goal ≥ ${t.goalRatio}×: ${
        goal(t.ratioOfMedians >= t.goalRatio)
      }.`,
    );
  }
  const missing = (["securityGroups", "migration", "dhcp", "tcp"] as const).filter((k) =>
    !result[k]
  )
    .map((k) => ({ securityGroups: "sg", migration: "migration", dhcp: "dhcp", tcp: "tcp" })[k]);
  if (missing.length) {
    parts.push(
      `_Not measured in this file: ${
        missing.map((c) => `\`deno task bench:net --case ${c}\``).join(", ")
      } ${missing.length > 1 ? "produce them" : "produces it"}._`,
    );
  }
  return parts.join("\n\n");
}

/** "Run: `command`, commit abc, 2026-12-03, load average 0.5 at start." for one case. */
function caseRun(meta: RunMeta): string {
  const load = Number.isFinite(meta.loadAvgBefore)
    ? `, load average ${meta.loadAvgBefore.toFixed(2)} at start`
    : "";
  return `Run: \`${meta.command}\`, commit ${meta.commit}, ${meta.date.slice(0, 10)}${load}.`;
}

// ---------------------------------------------------------------- any result

/**
 * Every {@linkcode Figure} in the result, pivoted: one row per object holding
 * figures (labelled by its `label` string, else its JSON path), one column per
 * figure name (`commandToDoneMs`), each cell "median (min–max)", plus p99 where
 * the sample supports one. Plain numbers (counts, settings) follow in a second
 * table, so nothing the result measured is left out.
 */
export function renderFigures(result: Record<string, unknown>): string {
  const groups = new Map<string, Map<string, Figure>>();
  const scalars: [string[], number | boolean][] = [];
  collect(result, [], {
    figure: (owner, key, f) => {
      if (!groups.has(owner)) groups.set(owner, new Map());
      groups.get(owner)!.set(key, f);
    },
    scalar: (path, value) => scalars.push([path, value]),
  });
  const parts = [groups.size ? figureTable(groups) : "_The result holds no figures._"];
  if (scalars.length) {
    const rows = scalars.map(([path, value]) => [
      path.map(humanize).join(": "),
      typeof value === "number" ? number(value) : String(value),
    ]);
    parts.push(table(["setting or count", "value"], rows, ["left", "right"]));
  }
  return parts.join("\n\n");
}

function figureTable(groups: Map<string, Map<string, Figure>>): string {
  const owners = dropCommonPrefix([...groups.keys()].map((owner) => owner.split(".")));
  const columns = [...new Set([...groups.values()].flatMap((g) => [...g.keys()]))];
  const rows = [...groups.values()].map((figures, i) => {
    const n = Math.max(...[...figures.values()].map((f) => f.n));
    return [
      owners[i].map(humanize).join(", ") || "(top level)",
      String(n),
      ...columns.map((column) => figureCell(figures.get(column), n)),
    ];
  });
  const headers = ["measure", "n", ...columns.map(humanize)];
  return table(headers, rows, headers.map((_, i): Align => (i === 0 ? "left" : "right")));
}

/** `modes.a.x`, `modes.b.x` → `a.x`, `b.x`: the shared leading segments say nothing. */
function dropCommonPrefix(paths: string[][]): string[][] {
  let shared = 0;
  while (
    paths.length > 1 && paths.every((p) => p.length > shared + 1 && p[shared] === paths[0][shared])
  ) shared++;
  return paths.map((p) => p.slice(shared));
}

/** "median (min–max)", with its p99 where it has one and its own n where it differs from the row's. */
function figureCell(f: Figure | undefined, rowN: number): string {
  if (!f) return "";
  const p99 = f.p99 === undefined ? "" : `, p99 ${number(f.p99)}`;
  const n = f.n === rowN ? "" : ` (n = ${f.n})`;
  return `${spread(f)}${p99}${n}`;
}

/** `commandToDoneMs` → `command to done ms`; units such as `MiB` keep their case. */
function humanize(key: string): string {
  const words = key.match(/[KMGT]iB|[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])/g) ?? [key];
  return words.map((word) => /^[A-Z][a-z]+$/.test(word) ? word.toLowerCase() : word).join(" ");
}

interface Collector {
  figure(owner: string, key: string, figure: Figure): void;
  scalar(path: string[], value: number | boolean): void;
}

function collect(value: unknown, path: string[], emit: Collector): void {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return;
  const record = value as Record<string, unknown>;
  const owner = typeof record.label === "string" ? record.label : path.join(".");
  for (const [key, child] of Object.entries(record)) {
    if (key === "meta") continue;
    if (isFigure(child)) emit.figure(owner, key, child);
    else if (typeof child === "number" || typeof child === "boolean") {
      emit.scalar([...path, key], child);
    } else collect(child, [...path, key], emit);
  }
}

// ---------------------------------------------------------------- formatting

type Align = "left" | "right";

/** "392.0 (380.1–401.2)"; one value when min = max. */
export function spread(f: Figure | null | undefined): string {
  if (!f || !isFiniteNumber(f.median)) return "–";
  if (f.min === f.max) return number(f.median);
  return `${number(f.median)} (${number(f.min)}–${number(f.max)})`;
}

/** Integers as they are; others whole from 100 up, one decimal from 10, else two. */
export function number(value: number | null | undefined): string {
  if (!isFiniteNumber(value)) return "–";
  const abs = Math.abs(value);
  const digits = Number.isInteger(value) || abs >= 100 ? 0 : abs >= 10 ? 1 : 2;
  return value.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function isFiniteNumber(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

/** A markdown table padded the way `deno fmt` pads one, so the file stays fmt-clean. */
export function table(headers: string[], rows: string[][], align: Align[]): string {
  const all = [headers, ...rows];
  const widths = headers.map((_, col) => Math.max(3, ...all.map((r) => [...r[col]].length)));
  const pad = (cell: string, col: number) => {
    const fill = " ".repeat(widths[col] - [...cell].length);
    return align[col] === "right" ? fill + cell : cell + fill;
  };
  const line = (cells: string[]) => `| ${cells.map(pad).join(" | ")} |`;
  const rule = widths.map((w, col) =>
    align[col] === "right" ? `${"-".repeat(w - 1)}:` : "-".repeat(w)
  );
  return [line(headers), `| ${rule.join(" | ")} |`, ...rows.map(line)].join("\n");
}
