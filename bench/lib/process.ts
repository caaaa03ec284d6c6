/**
 * Child-process management for benchmarks and multi-process tests.
 *
 * Every child is spawned in its own process group (`detached: true` ⇒ setsid),
 * so stopping it also reaches any grandchildren. stdout and stderr are appended
 * to a single log file whose path is kept for failure reports.
 */

import { trackRunning } from "./cleanup.ts";

export interface SpawnOptions {
  /** Human-readable name used in log markers and error messages. */
  name: string;
  command: string;
  args: string[];
  /** Combined stdout+stderr is appended here. */
  logPath: string;
  cwd?: string;
  env?: Record<string, string>;
}

const DEFAULT_STOP_TIMEOUT_MS = 5_000;

export class ManagedProcess {
  readonly name: string;
  readonly logPath: string;
  readonly status: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #pipes: Promise<void>;
  #exited = false;

  private constructor(
    name: string,
    logPath: string,
    child: Deno.ChildProcess,
    pipes: Promise<void>,
  ) {
    this.name = name;
    this.logPath = logPath;
    this.#child = child;
    this.#pipes = pipes;
    const untrack = trackRunning(this);
    this.status = child.status.then((status) => {
      this.#exited = true;
      untrack();
      return status;
    });
  }

  static async spawn(options: SpawnOptions): Promise<ManagedProcess> {
    await appendLine(
      options.logPath,
      `--- spawn ${options.name}: ${options.command} ${options.args.join(" ")}`,
    );
    const child = new Deno.Command(options.command, {
      args: options.args,
      cwd: options.cwd,
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true,
    }).spawn();
    const pipes = Promise.all([
      pipeToLog(child.stdout, options.logPath),
      pipeToLog(child.stderr, options.logPath),
    ]).then(() => {});
    return new ManagedProcess(options.name, options.logPath, child, pipes);
  }

  get pid(): number {
    return this.#child.pid;
  }

  get exited(): boolean {
    return this.#exited;
  }

  /** Sends `signal` to the child's whole process group (no-op once exited). */
  signal(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      Deno.kill(-this.#child.pid, signal);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }

  /** Waits for exit and for the log pipes to drain. */
  async wait(): Promise<Deno.CommandStatus> {
    const status = await this.status;
    await this.#pipes;
    return status;
  }

  /** SIGTERM, then SIGKILL if the process is still alive after `timeoutMs`. */
  async stop(timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<Deno.CommandStatus> {
    this.signal("SIGTERM");
    this.signal("SIGCONT"); // a SIGSTOPped child only sees SIGTERM once continued
    if (!(await exitsWithin(this, timeoutMs))) this.signal("SIGKILL");
    return await this.wait();
  }
}

async function exitsWithin(process: ManagedProcess, timeoutMs: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([process.status.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Copies chunk by chunk as output arrives: `stream.pipeTo(file.writable)` (Deno 2.9) only
 * reached the file when the child exited, so logs of running nodes looked stale.
 */
async function pipeToLog(stream: ReadableStream<Uint8Array>, logPath: string): Promise<void> {
  using file = await Deno.open(logPath, { append: true, create: true });
  try {
    for await (const chunk of stream) {
      for (let written = 0; written < chunk.length;) {
        written += await file.write(chunk.subarray(written));
      }
    }
  } catch { /* the child's pipe broke: nothing more to copy */ }
}

async function appendLine(path: string, line: string): Promise<void> {
  await Deno.writeTextFile(path, `${line}\n`, { append: true, create: true });
}

/** Runs a command to completion, returning stdout; throws with stderr on failure. */
export async function runToCompletion(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<string> {
  const output = await new Deno.Command(command, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr);
    throw new Error(
      `${command} ${
        args.join(" ")
      } exited with ${output.code}\nstdout:\n${stdout}\nstderr:\n${stderr}`,
    );
  }
  return stdout;
}
