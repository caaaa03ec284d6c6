/**
 * The cluster backup file (`novactl cluster backup FILE`): one header line of
 * metadata, then a state-machine snapshot exactly as `core/fsm/snapshot_file.ts`
 * writes it (newline-delimited JSON, format 2).
 *
 * ```
 * {"kind":"novactl-cluster-backup","format":1,"clusterId":"…","index":812,"term":4,
 *  "members":[{"name":"n1","url":"https://…","role":"voter"},…],"createdAt":"…",
 *  "version":"0.1.0","bytes":52311,"sha256":"…"}
 * {"format":2,"clusterId":"…"}
 * ["members",{…}]
 * …
 * ```
 *
 * `bytes` and `sha256` describe everything after the header line, so a reader
 * streams the file once, hashing as it goes, and can tell a truncated file
 * (too few bytes), a corrupt one (another hash) and a foreign one (no header)
 * apart before it writes anything. Neither side holds the snapshot in memory.
 *
 * The file holds the cluster CA's private key and every API token's hash: it is
 * written 0600 and must be kept like the data dirs themselves.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { ValidationError } from "../errors/mod.ts";
import { writeAll } from "../store/mod.ts";

export const BACKUP_KIND = "novactl-cluster-backup";
export const BACKUP_FORMAT = 1;

/** The longest header line a reader accepts (a header names every member). */
const MAX_HEADER_BYTES = 1 << 20;

const memberSchema = z.object({
  name: z.string().min(1).max(63),
  url: z.string().max(2048),
  role: z.enum(["voter", "learner"]),
});

const headerSchema = z.object({
  kind: z.literal(BACKUP_KIND),
  format: z.literal(BACKUP_FORMAT),
  clusterId: z.string().min(1).max(128),
  index: z.number().int().positive(),
  term: z.number().int().nonnegative(),
  members: z.array(memberSchema).max(10_000),
  createdAt: z.string().max(64),
  version: z.string().max(64),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

/** What a backup says about itself: where it was taken, and the snapshot that follows. */
export type BackupHeader = z.infer<typeof headerSchema>;

/** A member as recorded in a backup's header. */
export type BackupMember = z.infer<typeof memberSchema>;

/** The header as one line of the file. */
export function headerLine(header: BackupHeader): string {
  return JSON.stringify(header) + "\n";
}

/** SHA-256, size and members of a snapshot file, read once in blocks. */
export async function describeSnapshot(
  path: string,
): Promise<{ bytes: number; sha256: string; members: BackupMember[] }> {
  const hash = createHash("sha256");
  const members: BackupMember[] = [];
  const decoder = new TextDecoder();
  let bytes = 0;
  let pending = "";
  // The readable closes the file when it ends or the loop leaves early.
  const file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) {
    hash.update(chunk);
    bytes += chunk.byteLength;
    pending += decoder.decode(chunk, { stream: true });
    let nl: number;
    let start = 0;
    while ((nl = pending.indexOf("\n", start)) >= 0) {
      const line = pending.slice(start, nl);
      start = nl + 1;
      if (line.startsWith('["members",')) {
        const row = JSON.parse(line)[1] as Record<string, unknown>;
        members.push({
          name: String(row.name),
          url: String(row.url),
          role: row.role === "voter" ? "voter" : "learner",
        });
      }
    }
    pending = pending.slice(start);
  }
  return { bytes, sha256: hash.digest("hex"), members };
}

/**
 * The backup as a byte stream: the header line, then the snapshot file's bytes.
 * `done` runs once the stream ended or the reader cancelled it (remove the file there).
 */
export function backupStream(
  header: BackupHeader,
  snapshotPath: string,
  done: () => void,
): ReadableStream<Uint8Array> {
  let file: Deno.FsFile | null = null;
  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done();
  };
  return new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(new TextEncoder().encode(headerLine(header)));
      file = await Deno.open(snapshotPath, { read: true });
      reader = file.readable.getReader();
    },
    async pull(controller) {
      const { done: end, value } = await reader!.read();
      if (end) {
        controller.close();
        finish();
      } else controller.enqueue(value);
    },
    async cancel() {
      await reader?.cancel().catch(() => {});
      finish();
    },
  }, { highWaterMark: 4 });
}

/** Why a file is not a usable backup, naming the file and the reason. */
function badBackup(path: string, reason: string): ValidationError {
  return ValidationError.field("file", `${path}: ${reason}`);
}

/**
 * Reads a backup once, in blocks: checks its header, then that the snapshot has
 * the announced size and SHA-256 and begins with a snapshot header of the same
 * cluster. With `extractTo`, the snapshot (without the backup's header) is also
 * written there, fsynced; the caller removes it when the check fails.
 *
 * @throws {ValidationError} (field `file`) when the file is missing, foreign,
 *   truncated, longer than announced or corrupt.
 */
export async function readBackup(
  path: string,
  opts: { extractTo?: string } = {},
): Promise<BackupHeader> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    throw badBackup(path, `cannot open: ${(err as Error).message}`);
  }
  const out = opts.extractTo
    ? await Deno.open(opts.extractTo, { write: true, create: true, truncate: true, mode: 0o600 })
    : null;
  try {
    const reader = file.readable.getReader();
    let head = new Uint8Array(0);
    let rest: Uint8Array | null = null;
    while (rest === null) {
      const { done, value } = await reader.read();
      if (done) {
        throw badBackup(
          path,
          head.length ? "ends inside its header line (truncated)" : "is empty",
        );
      }
      const joined = new Uint8Array(head.length + value.length);
      joined.set(head);
      joined.set(value, head.length);
      const nl = joined.indexOf(10);
      if (nl >= 0) {
        head = joined.subarray(0, nl);
        rest = joined.subarray(nl + 1);
      } else head = joined;
      if (head.length > MAX_HEADER_BYTES) {
        throw badBackup(path, "is not a novactl cluster backup (no header line)");
      }
    }
    const header = parseHeader(path, new TextDecoder().decode(head));
    const hash = createHash("sha256");
    let bytes = 0;
    let firstLine = "";
    let sawFirstLine = false;
    const decoder = new TextDecoder();
    const take = async (chunk: Uint8Array) => {
      if (!chunk.length) return;
      hash.update(chunk);
      bytes += chunk.length;
      if (!sawFirstLine) {
        firstLine += decoder.decode(chunk, { stream: true });
        const nl = firstLine.indexOf("\n");
        if (nl >= 0) {
          firstLine = firstLine.slice(0, nl);
          sawFirstLine = true;
        } else if (firstLine.length > MAX_HEADER_BYTES) sawFirstLine = true;
      }
      if (out) await writeAll(out, chunk);
    };
    await take(rest);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      await take(value);
    }
    if (bytes < header.bytes) {
      throw badBackup(
        path,
        `is truncated: it holds ${bytes} of the ${header.bytes} snapshot bytes its header announces`,
      );
    }
    if (bytes > header.bytes) {
      throw badBackup(
        path,
        `has ${bytes - header.bytes} bytes more than the ${header.bytes} its header announces`,
      );
    }
    const sha = hash.digest("hex");
    if (sha !== header.sha256) {
      throw badBackup(
        path,
        `is corrupt: its snapshot's SHA-256 is ${sha}, its header says ${header.sha256}`,
      );
    }
    checkSnapshotHeader(path, firstLine, header.clusterId);
    if (out) await out.sync();
    return header;
  } finally {
    out?.close();
    try {
      file.close();
    } catch { /* closed by its readable at the end */ }
  }
}

function parseHeader(path: string, text: string): BackupHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw badBackup(path, "is not a novactl cluster backup (its first line is not JSON)");
  }
  if ((raw as { kind?: unknown })?.kind !== BACKUP_KIND) {
    throw badBackup(path, `is not a novactl cluster backup (no "kind": "${BACKUP_KIND}")`);
  }
  if ((raw as { format?: unknown }).format !== BACKUP_FORMAT) {
    throw badBackup(
      path,
      `has backup format ${
        (raw as { format?: unknown }).format
      }; this novactl reads format ${BACKUP_FORMAT}`,
    );
  }
  const parsed = headerSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw badBackup(path, `header field ${issue.path.join(".")}: ${issue.message}`);
  }
  return parsed.data;
}

function checkSnapshotHeader(path: string, line: string, clusterId: string): void {
  let snap: { format?: unknown; clusterId?: unknown };
  try {
    snap = JSON.parse(line);
  } catch {
    throw badBackup(path, "its snapshot does not start with a snapshot header");
  }
  if (snap.format !== 2) {
    throw badBackup(path, `its snapshot has format ${snap.format}; expected 2`);
  }
  if (snap.clusterId !== clusterId) {
    throw badBackup(
      path,
      `its snapshot belongs to cluster ${snap.clusterId}, its header to ${clusterId}`,
    );
  }
}
