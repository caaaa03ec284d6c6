/**
 * The lean entry of `novactl host watchdog`: main.ts runs it without loading
 * the CLI. Any other form of the command (help, bad usage) goes through the
 * full CLI (cmd/host.ts), which accepts the same arguments.
 */
import { runWatchdog } from "./watchdog.ts";

/** Exactly `host watchdog --data-dir DIR` (or `--data-dir=DIR`). */
export function isWatchdogInvocation(args: string[]): boolean {
  return args[0] === "host" && args[1] === "watchdog" && dataDirOf(args) !== null;
}

function dataDirOf(args: string[]): string | null {
  const rest = args.slice(2);
  if (rest.length === 2 && rest[0] === "--data-dir" && rest[1]) return rest[1];
  if (rest.length === 1 && rest[0].startsWith("--data-dir=")) return rest[0].slice(11) || null;
  return null;
}

/** Runs the watchdog until it exits idle; the process exit code. */
export async function watchdogMain(args: string[]): Promise<number> {
  await runWatchdog(dataDirOf(args)!);
  return 0;
}
