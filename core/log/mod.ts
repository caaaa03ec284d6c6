/** Structured JSON logs on stderr, one object per line. Never log secrets. */

export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function configuredLevel(): Level {
  const v = Deno.env.get("NOVACTL_LOG_LEVEL") as Level | undefined;
  return v && v in ORDER ? v : "info";
}

let minLevel: Level = configuredLevel();
const baseFields: Record<string, unknown> = {};

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
    ...fields,
  });
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // stderr closed: nothing sensible left to do with a log line.
  }
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => write("debug", msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => write("info", msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => write("warn", msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => write("error", msg, fields),
};
