/** Rendering results: `-o json` prints exactly one JSON document; tables for people. */

export type Format = "json" | "table";

export function printJson(data: unknown): void {
  console.log(JSON.stringify(data, null, 2));
}

/** Prints rows as an aligned table with upper-case headers. */
export function printTable(rows: Record<string, unknown>[], columns: string[]): void {
  const cell = (
    v: unknown,
  ) => (v === null || v === undefined
    ? "-"
    : typeof v === "object"
    ? JSON.stringify(v)
    : String(v));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join("  ").trimEnd();
  console.log(line(columns.map((c) => c.toUpperCase())));
  for (const r of rows) console.log(line(columns.map((c) => cell(r[c]))));
}

/** Prints key/value pairs, one per line. */
export function printFields(obj: Record<string, unknown>): void {
  const width = Math.max(...Object.keys(obj).map((k) => k.length));
  for (const [k, v] of Object.entries(obj)) {
    const text = v === null || v === undefined
      ? "-"
      : typeof v === "object"
      ? JSON.stringify(v)
      : String(v);
    console.log(`${k.padEnd(width)}  ${text}`);
  }
}

export function render(format: Format, data: unknown, asTable: () => void): void {
  if (format === "json") printJson(data);
  else asTable();
}
