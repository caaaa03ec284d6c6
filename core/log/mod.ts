/**
 * Structured JSON logs on stderr, one object per line. Never log secrets. A line
 * written while serving a request carries that request's id (./request_context.ts).
 */
import { setImmediate } from "node:timers";
import { currentRequestId } from "./request_context.ts";
export { currentRequestId, runForRequest } from "./request_context.ts";

export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** The levels, least severe first (`--log-level`, `NOVACTL_LOG_LEVEL`). */
export const LEVELS = Object.keys(ORDER) as Level[];

export function isLevel(v: string): v is Level {
  return Object.hasOwn(ORDER, v);
}

function configuredLevel(): Level {
  const v = Deno.env.get("NOVACTL_LOG_LEVEL");
  return v && isLevel(v) ? v : "info";
}

let minLevel: Level = configuredLevel();
const baseFields: Record<string, unknown> = {};

/** Whether a line at `level` would be written. */
export function logs(level: Level): boolean {
  return ORDER[level] >= ORDER[minLevel];
}

export function setLogLevel(level: Level): void {
  minLevel = level;
}

/** Fields added to every line (e.g. the node name). */
export function setLogContext(fields: Record<string, unknown>): void {
  Object.assign(baseFields, fields);
}

const encoder = new TextEncoder();

function write(level: Level, msg: string, fields?: Record<string, unknown>): void {
  if (ORDER[level] < ORDER[minLevel]) return;
  const line = JSON.stringify({
    ts: new Date().toISOString(),
    level,
    msg,
    ...baseFields,
    requestId: currentRequestId(),
    ...fields,
  });
  if (sink) return sink(line);
  pending.push(line);
  // Warnings and errors go out at once (a fatal one may be the last thing this process
  // does); debug and info lines, one per request under load, leave together once this
  // turn of the event loop is over: one write instead of one per line.
  if (ORDER[level] >= ORDER.warn) return flushLogs();
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flushLogs);
  }
}

let pending: string[] = [];
let flushScheduled = false;

/** Writes every line not yet written (in order). */
export function flushLogs(): void {
  flushScheduled = false;
  if (!pending.length) return;
  const bytes = encoder.encode(pending.join("\n") + "\n");
  pending = [];
  try {
    for (let at = 0; at < bytes.length;) at += Deno.stderr.writeSync(bytes.subarray(at));
  } catch {
    // stderr closed: nothing sensible left to do with a log line.
  }
}

let sink: ((line: string) => void) | null = null;

/** Sends every line to `to` instead of stderr (tests read what was logged); null: stderr. */
export function setLogSink(to: ((line: string) => void) | null): void {
  sink = to;
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => write("debug", msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => write("info", msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => write("warn", msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => write("error", msg, fields),
};
