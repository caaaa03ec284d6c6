/** Console table, markdown table and JSON document for the consensus benchmark. */

import type { LoadResult } from "./loadgen.ts";

export interface BenchRow {
  system: string;
  clients: number;
  writes: number;
  writesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
  errors: number;
  errorSamples: string[];
}

export interface RatioRow {
  clients: number;
  /** novactl writes/s divided by etcd writes/s. */
  throughputRatio: number;
}

export function toRow(system: string, result: LoadResult): BenchRow {
  return {
    system,
    clients: result.clients,
    writes: result.writes,
    writesPerSec: round(result.writesPerSec, 1),
    p50Ms: round(result.latency.p50Ms, 3),
    p99Ms: round(result.latency.p99Ms, 3),
    maxMs: round(result.latency.maxMs, 3),
    meanMs: round(result.latency.meanMs, 3),
    errors: result.errors,
    errorSamples: result.errorSamples,
  };
}

/** novactl/etcd throughput ratio for every client count measured on both systems. */
export function throughputRatios(rows: BenchRow[]): RatioRow[] {
  const ratios: RatioRow[] = [];
  for (const clients of clientCounts(rows)) {
    const novactl = rows.find((r) => r.system === "novactl" && r.clients === clients);
    const etcd = rows.find((r) => r.system === "etcd" && r.clients === clients);
    if (novactl && etcd && etcd.writesPerSec > 0) {
      ratios.push({ clients, throughputRatio: round(novactl.writesPerSec / etcd.writesPerSec, 3) });
    }
  }
  return ratios;
}

const HEADERS = [
  "clients",
  "system",
  "writes/s",
  "p50 ms",
  "p99 ms",
  "max ms",
  "errors",
  "novactl/etcd",
];

function tableCells(rows: BenchRow[]): string[][] {
  const ratios = new Map(throughputRatios(rows).map((r) => [r.clients, r.throughputRatio]));
  const sorted = [...rows].sort((a, b) =>
    a.clients - b.clients || a.system.localeCompare(b.system)
  );
  return sorted.map((row) => [
    String(row.clients),
    row.system,
    row.writesPerSec.toFixed(1),
    row.p50Ms.toFixed(2),
    row.p99Ms.toFixed(2),
    row.maxMs.toFixed(2),
    String(row.errors),
    row.system === "novactl" && ratios.has(row.clients)
      ? `${ratios.get(row.clients)!.toFixed(2)}x`
      : "",
  ]);
}

/** Fixed-width plain-text table for the terminal. */
export function formatConsoleTable(rows: BenchRow[]): string {
  const cells = [HEADERS, ...tableCells(rows)];
  const widths = HEADERS.map((_, col) => Math.max(...cells.map((row) => row[col].length)));
  const lines = cells.map((row) =>
    row.map((cell, col) => alignCell(cell, widths[col], col)).join("  ")
  );
  lines.splice(1, 0, widths.map((w) => "-".repeat(w)).join("  "));
  return lines.join("\n");
}

/** GitHub-flavoured markdown table, ready to paste into BENCHMARKS.md. */
export function formatMarkdownTable(rows: BenchRow[]): string {
  const header = `| ${HEADERS.join(" | ")} |`;
  const rule = `|${HEADERS.map((_, col) => (col < 2 ? "---" : "---:")).join("|")}|`;
  const body = tableCells(rows).map((row) => `| ${row.join(" | ")} |`);
  return [header, rule, ...body].join("\n");
}

function alignCell(cell: string, width: number, column: number): string {
  return column === 1 ? cell.padEnd(width) : cell.padStart(width);
}

function clientCounts(rows: BenchRow[]): number[] {
  return [...new Set(rows.map((row) => row.clients))].sort((a, b) => a - b);
}

function round(value: number, digits: number): number {
  if (!Number.isFinite(value)) return value;
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
