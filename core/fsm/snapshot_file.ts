/**
 * The state machine's snapshot format, built to be written and read a row at
 * a time so that neither side ever holds a whole snapshot in memory.
 *
 * Format 2 is newline-delimited JSON:
 * ```
 * {"format":2,"clusterId":"…"}
 * ["vms",{"name":"web1",…}]
 * ["operations",{…}]
 * ```
 * Format 1 (one JSON document `{"format":1,"clusterId","tables":{t:[rows]}}`)
 * is still read, as a whole, for snapshots written by older versions.
 */

/** One replicated row: its table and its columns. */
export type SnapshotRow = [table: string, row: Record<string, unknown>];

export interface SnapshotHeader {
  format: 2;
  clusterId: string | null;
}

export function headerLine(clusterId: string | null): string {
  const header: SnapshotHeader = { format: 2, clusterId };
  return JSON.stringify(header) + "\n";
}

export function rowLine(table: string, row: Record<string, unknown>): string {
  return JSON.stringify([table, row]) + "\n";
}

/** What a snapshot holds, parsed lazily: the header first, then rows in batches. */
export interface ParsedSnapshot {
  clusterId: string | null;
  /** Rows in batches of at most `batchRows`. */
  batches: Iterable<SnapshotRow[]>;
}

/** Parses snapshot lines (format 1 or 2) into a header and row batches. */
export function parseSnapshot(lines: Iterator<string>, batchRows: number): ParsedSnapshot {
  const first = lines.next();
  if (first.done) throw new Error("snapshot is empty");
  const head = JSON.parse(first.value) as {
    format: number;
    clusterId: string | null;
    tables?: Record<string, Record<string, unknown>[]>;
  };
  if (head.format === 1) {
    const rows: SnapshotRow[] = [];
    for (const [t, list] of Object.entries(head.tables ?? {})) {
      for (const r of list) rows.push([t, r]);
    }
    return { clusterId: head.clusterId, batches: [rows] };
  }
  if (head.format !== 2) throw new Error(`unsupported snapshot format ${head.format}`);
  return { clusterId: head.clusterId, batches: rowBatches(lines, batchRows) };
}

function* rowBatches(lines: Iterator<string>, batchRows: number): Generator<SnapshotRow[]> {
  let batch: SnapshotRow[] = [];
  for (let l = lines.next(); !l.done; l = lines.next()) {
    if (l.value === "") continue;
    batch.push(JSON.parse(l.value) as SnapshotRow);
    if (batch.length >= batchRows) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length) yield batch;
}

/** Lines of an in-memory snapshot (bootstrap, tests). */
export function* linesOfText(text: string): Generator<string> {
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf("\n", start);
    if (end < 0) end = text.length;
    yield text.slice(start, end);
    start = end + 1;
  }
}

/**
 * Lines of a snapshot file, read synchronously in 64 KiB blocks: memory
 * holds one block and one line, whatever the file's size.
 */
export function* linesOfFile(path: string): Generator<string> {
  const file = Deno.openSync(path, { read: true });
  try {
    const decoder = new TextDecoder();
    const block = new Uint8Array(64 * 1024);
    let pending = "";
    for (;;) {
      const n = file.readSync(block);
      if (n === null) break;
      pending += decoder.decode(block.subarray(0, n), { stream: true });
      let start = 0;
      let nl: number;
      while ((nl = pending.indexOf("\n", start)) >= 0) {
        yield pending.slice(start, nl);
        start = nl + 1;
      }
      pending = pending.slice(start);
    }
    pending += decoder.decode();
    if (pending) yield pending;
  } finally {
    file.close();
  }
}

/** Writes text to a file in blocks of about `flushBytes`, awaiting each write. */
export class SnapshotWriter {
  private parts: string[] = [];
  private size = 0;
  bytes = 0;

  constructor(private readonly file: Deno.FsFile, private readonly flushBytes = 1 << 20) {}

  async add(text: string): Promise<void> {
    this.parts.push(text);
    this.size += text.length;
    if (this.size >= this.flushBytes) await this.flush();
  }

  async flush(): Promise<void> {
    if (!this.parts.length) return;
    const bytes = new TextEncoder().encode(this.parts.join(""));
    this.parts = [];
    this.size = 0;
    let off = 0;
    // write() may write less than asked: loop until the whole block is out.
    while (off < bytes.length) off += await this.file.write(bytes.subarray(off));
    this.bytes += bytes.length;
  }
}
