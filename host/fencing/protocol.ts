/**
 * The wire between a node and its fencing watchdog: one JSON object per line
 * over a unix socket in the data dir, each request answered by one line.
 */
import { join } from "node:path";

export interface WatchdogPaths {
  socket: string;
  pidfile: string;
  log: string;
}

export function watchdogPaths(dataDir: string): WatchdogPaths {
  return {
    socket: join(dataDir, "watchdog.sock"),
    pidfile: join(dataDir, "watchdog.pid"),
    log: join(dataDir, "watchdog.log"),
  };
}

export type WatchdogRequest =
  /** Who are you, and until when may HA VMs run? */
  | { op: "hello" }
  /** HA VMs may run until `fenceAt` (CLOCK_BOOTTIME ms); the latest feed replaces earlier ones. */
  | { op: "feed"; fenceAt: number }
  /**
   * Start `argv` jailed so that it dies with the watchdog, stderr appended to `logPath`, its host
   * pid written to `pidfile`; the reply's `pid` is that pid.
   */
  | { op: "spawn"; name: string; argv: string[]; logPath: string; pidfile: string };

export interface HelloReply {
  pid: number;
  fenceAt: number;
  children: { name: string; pid: number }[];
}

export type WatchdogReply =
  | { ok: true; hello?: HelloReply; pid?: number }
  | { ok: false; error: string };

/** Splits a byte stream into lines (the protocol's framing). */
export async function* lines(conn: Deno.Conn): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of conn.readable) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
    }
  }
}

const encoder = new TextEncoder();

/** Writes one message as a line, all of it. */
export async function sendLine(conn: Deno.Conn, message: unknown): Promise<void> {
  const bytes = encoder.encode(JSON.stringify(message) + "\n");
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}
