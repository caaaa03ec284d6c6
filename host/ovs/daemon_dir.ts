/**
 * What every Open vSwitch and OVN daemon a node runs has in common: a
 * directory of its own (run, log, databases), started detached with its pid
 * file, control socket and log file there, and found again through the pid
 * file. The daemons outlive the node process, as QEMU does, so guests keep
 * their network while a node restarts; a node that finds one dead starts it
 * again (that check is the supervision).
 *
 * @module
 */
import { join } from "node:path";
import { NovaError } from "../../core/errors/mod.ts";
import { pathExists } from "../../core/store/mod.ts";

export class DaemonDir {
  readonly run: string;
  readonly log: string;

  constructor(readonly root: string) {
    this.run = join(root, "run");
    this.log = join(root, "log");
  }

  /** The variables that keep OVS's and OVN's tools in this directory, not /var/run. */
  get env(): Record<string, string> {
    return {
      OVS_RUNDIR: this.run,
      OVS_LOGDIR: this.log,
      OVS_DBDIR: this.root,
      OVS_SYSCONFDIR: this.root,
      OVN_RUNDIR: this.run,
      OVN_LOGDIR: this.log,
      OVN_DBDIR: this.root,
      OVN_SYSCONFDIR: this.root,
    };
  }

  async prepare(): Promise<void> {
    await Deno.mkdir(this.run, { recursive: true, mode: 0o700 });
    await Deno.mkdir(this.log, { recursive: true, mode: 0o700 });
  }

  /** A unix socket path in the run directory. */
  socket(name: string): string {
    return join(this.run, `${name}.sock`);
  }

  /** The pid of daemon `name` if it runs (its pid file names a live process of it), else null. */
  async pidOf(name: string): Promise<number | null> {
    const text = await Deno.readTextFile(join(this.run, `${name}.pid`)).catch(() => "");
    const pid = Number(text.trim());
    if (!(pid > 0)) return null;
    try {
      const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`);
      // A pid file outlives its process, and the pid may belong to another process by now.
      return cmdline.split("\0").some((arg) => arg.endsWith(`${name}.pid`)) ? pid : null;
    } catch {
      return null;
    }
  }

  /**
   * Starts `binary` detached as daemon `name` unless it runs; true when it had to start it.
   * `args` are the daemon's own; pid file, control socket and log file are added here
   * (`unixctl: false` for daemons without that option, such as ovn-controller, which put
   * their control socket in `OVN_RUNDIR`).
   */
  async ensureDaemon(
    name: string,
    binary: string,
    args: string[],
    opts: { unixctl?: boolean } = {},
  ): Promise<boolean> {
    if (await this.pidOf(name)) return false;
    const unixctl = opts.unixctl ?? true;
    const start = () =>
      this.exec(binary, [
        ...args,
        `--pidfile=${join(this.run, `${name}.pid`)}`,
        ...(unixctl ? [`--unixctl=${join(this.run, `${name}.ctl`)}`] : []),
        `--log-file=${join(this.log, `${name}.log`)}`,
        "--detach",
        "--no-chdir",
      ]);
    try {
      await start();
    } catch (err) {
      // A daemon that just died can still hold its pid file's lock: the kernel drops a
      // process's memory (its /proc cmdline goes empty, so pidOf says gone) before its
      // files. The new one then refuses as "already running"; once the old one is gone, it
      // starts.
      const holder = /already running as pid (\d+)/.exec(String(err))?.[1];
      if (!holder || !(await exited(Number(holder), 5_000))) throw err;
      await start();
    }
    return true;
  }

  /** Stops daemon `name` if it runs (tests; a node leaves its guests' network running). */
  async stopDaemon(name: string): Promise<void> {
    const pid = await this.pidOf(name);
    if (!pid) return;
    try {
      Deno.kill(pid, "SIGTERM");
    } catch { /* gone already */ }
  }

  /** Runs a tool with this directory's environment; its stdout, or an error with its stderr. */
  exec(binary: string, args: string[]): Promise<string> {
    return runTool(binary, args, this.env);
  }

  /** Creates the OVSDB database `file` from `schema` unless it exists. */
  async ensureDatabase(file: string, schema: string): Promise<void> {
    if (!(await pathExists(file))) await this.exec("ovsdb-tool", ["create", file, schema]);
  }
}

/** Runs `binary` with `env` added; its stdout, or an error naming the command with its stderr. */
export async function runTool(
  binary: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<string> {
  const out = await new Deno.Command(binary, {
    args,
    env,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new NovaError(
      "unavailable",
      `${binary} ${args.join(" ")} failed: ${dec.decode(out.stderr).trim()}`,
    );
  }
  return dec.decode(out.stdout);
}

/** Why `binaries` cannot run here (which are missing, and the Debian packages to install), or null. */
export async function missingBinaries(
  binaries: string[],
  packages: string[],
  what: string,
): Promise<string | null> {
  const missing: string[] = [];
  for (const bin of binaries) {
    const found = await new Deno.Command("sh", {
      args: ["-c", `command -v ${bin}`],
      stdout: "null",
      stderr: "null",
    }).output();
    if (!found.success) missing.push(bin);
  }
  if (missing.length === 0) return null;
  return `${what} is not installed (${missing.join(", ")} missing): apt-get install ${
    packages.join(" ")
  }`;
}

/** Whether process `pid` is gone (or a zombie, its files closed) within `ms`. */
async function exited(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => null);
    if (status === null || /^State:\s+Z/m.test(status)) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}
