/**
 * Rendering results, in one place for every command: `-o json` prints exactly one JSON document,
 * `-o yaml` one YAML document, `-o name` (or `-q`) the names alone, one per line; tables for
 * people (`-o wide` adds every other plain column, `--no-headers` drops the header line).
 *
 * @module
 */
import { stringify as toYaml } from "yaml";

/** Every `-o` value. */
export const OUTPUT_FORMATS = ["json", "yaml", "table", "wide", "name"] as const;
export type Format = typeof OUTPUT_FORMATS[number];

/** The table settings of this run (set once from the global flags, see common.ts). */
const settings = { headers: true, quiet: false, wide: false };

/** Applies `--no-headers` and `-q` for the rest of the run. */
export function configureOutput(opts: { headers: boolean; quiet: boolean }): void {
  settings.headers = opts.headers;
  settings.quiet = opts.quiet;
}

export function printJson(data: unknown): void {
  console.log(JSON.stringify(data, null, 2));
}

function cell(v: unknown): string {
  return v === null || v === undefined
    ? "-"
    : typeof v === "object"
    ? JSON.stringify(v)
    : String(v);
}

/** Columns `-o wide` adds: every other key of the rows whose values are plain (not objects). */
function wideColumns(rows: Record<string, unknown>[], columns: string[]): string[] {
  const extra: string[] = [];
  for (const r of rows) {
    for (const [k, v] of Object.entries(r)) {
      if (columns.includes(k) || extra.includes(k)) continue;
      if (v === null || typeof v !== "object") extra.push(k);
    }
  }
  return [...columns, ...extra];
}

/** Prints rows as an aligned table with upper-case headers. */
export function printTable(rows: Record<string, unknown>[], columns: string[]): void {
  const cols = settings.wide ? wideColumns(rows, columns) : columns;
  const widths = cols.map((c) =>
    Math.max(settings.headers ? c.length : 0, ...rows.map((r) => cell(r[c]).length))
  );
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join("  ").trimEnd();
  if (settings.headers) console.log(line(cols.map((c) => c.toUpperCase())));
  for (const r of rows) console.log(line(cols.map((c) => cell(r[c]))));
}

/** Prints key/value pairs, one per line. */
export function printFields(obj: Record<string, unknown>): void {
  const width = Math.max(...Object.keys(obj).map((k) => k.length));
  for (const [k, v] of Object.entries(obj)) console.log(`${k.padEnd(width)}  ${cell(v)}`);
}

/**
 * The names in a result: a named object itself (`vm show`), else the items of an array or of a
 * list envelope (`{vms: [...]}`, its first array-valued field); each item's `name`, else its `id`.
 */
export function namesOf(data: unknown): string[] {
  const named = (o: unknown) => !!o && typeof o === "object" && ("name" in o || "id" in o);
  const items = Array.isArray(data)
    ? data
    : named(data)
    ? [data]
    : data && typeof data === "object"
    ? Object.values(data).find(Array.isArray) ?? []
    : [];
  return items.flatMap((item) => {
    if (typeof item === "string") return [item];
    const o = item as { name?: unknown; id?: unknown } | null;
    const name = o?.name ?? o?.id;
    return typeof name === "string" || typeof name === "number" ? [String(name)] : [];
  });
}

/** Prints a result in the chosen format; `asTable` draws it for `table` and `wide`. */
export function render(format: Format, data: unknown, asTable: () => void): void {
  if (settings.quiet || format === "name") {
    for (const n of namesOf(data)) console.log(n);
  } else if (format === "json") printJson(data);
  else if (format === "yaml") console.log(toYaml(data ?? null).trimEnd());
  else {
    settings.wide = format === "wide";
    asTable();
  }
}
