/**
 * `novactl host watchdog`: the per-host fencing supervisor. It is not the node
 * process, so a node that dies, hangs (SIGSTOP) or is cut off from the leader
 * cannot keep an HA VM running past its lease:
 *
 * 1. The node starts it in its own session (it outlives the node) and feeds it
 *    after every granted lease renewal with the instant HA VMs must be dead by
 *    (`fenceAt`, CLOCK_BOOTTIME ms, the clock both processes share).
 * 2. Each HA QEMU runs in a PID namespace of its own (the "jail", see
 *    {@link jailedCommand}) whose init is a root process tied to the watchdog
 *    by PR_SET_PDEATHSIG. QEMU itself cannot carry that tie: it drops root
 *    (`-runas`) and the kernel clears PDEATHSIG on any uid change. But when a
 *    namespace's init dies the kernel SIGKILLs everything in it, whatever its
 *    uid, so QEMU still dies at once with the watchdog.
 * 3. Once `fenceAt` passes unfed it SIGKILLs every jail, whatever the node
 *    does; if the watchdog itself dies, the kernel kills them.
 * 4. A restarted node re-attaches over the socket and learns the deadline, so
 *    VMs keep running across a quick node restart.
 * 5. With no child and no node attached for a while it exits: a new node
 *    process starts a new one.
 */
import { bootTimeMs } from "../../core/cluster/lease.ts";
import { log, setLogContext } from "../../core/log/mod.ts";
import { writeFileDurably } from "../../core/store/files.ts";
import {
  type HelloReply,
  lines,
  sendLine,
  type WatchdogPaths,
  watchdogPaths,
  type WatchdogReply,
  type WatchdogRequest,
} from "./protocol.ts";

const CHECK_EVERY_MS = 50;
const IDLE_EXIT_MS = 5_000;
const SETPRIV = "/usr/bin/setpriv";
const UNSHARE = "/usr/bin/unshare";
/** How long a jail may take to start QEMU (write its pidfile) before the spawn fails. */
const JAIL_START_MS = 5_000;

/**
 * The init of an HA QEMU's PID namespace (`sh -c`), root and never changing uid, so the
 * PDEATHSIG `unshare --kill-child` gave it holds. Arguments: the watchdog's pid, the pidfile,
 * QEMU's argv.
 *
 * It first checks that its parent (`unshare`) and grandparent (the watchdog) are alive as it
 * expects: each PDEATHSIG is armed by the child after the fork, so a parent that died in
 * between went unnoticed, and QEMU must then not start. /proc is the host's (no
 * `--mount-proc`), so `/proc/self/stat` gives host pids. The subshell writes its own host pid
 * to the pidfile, then execs QEMU (QEMU's own `-pidfile` would say 2, its pid in here). When
 * QEMU exits, so does the init, and the namespace is gone.
 */
const JAIL_INIT = [
  "wd=$1 pf=$2; shift 2",
  "read -r me comm state up rest </proc/self/stat",
  'read -r up comm state gp rest <"/proc/$up/stat" || exit 70',
  'if [ "$gp" != "$wd" ]; then echo "fencing: watchdog $wd gone before QEMU started" >&2; exit 70; fi',
  '( read -r pid rest </proc/self/stat; echo "$pid" >"$pf"; exec "$@" ) &',
  "wait $!",
].join("\n");

/**
 * The command that starts `argv` (an HA QEMU) jailed: stderr appended to `logPath`; a child
 * that dies with `watchdogPid` (PDEATHSIG) and runs `unshare` to make a PID namespace whose
 * init dies with it (`--kill-child`); QEMU inside, its host pid written to `pidfile`.
 * Killing the returned command's process (`unshare`) kills QEMU with it.
 */
export function jailedCommand(
  argv: string[],
  opts: { logPath: string; pidfile: string; watchdogPid: number },
): string[] {
  return [
    "/bin/sh",
    "-c",
    'log="$1"; shift; exec "$@" 2>>"$log"',
    "sh",
    opts.logPath,
    SETPRIV,
    "--pdeathsig",
    "KILL",
    "--",
    UNSHARE,
    "--pid",
    "--fork",
    "--kill-child=SIGKILL",
    "--",
    "/bin/sh",
    "-c",
    JAIL_INIT,
    "jail",
    String(opts.watchdogPid),
    opts.pidfile,
    ...argv,
  ];
}

interface Child {
  name: string;
  /** The jail (`unshare`): killing it kills QEMU. */
  process: Deno.ChildProcess;
  /** QEMU's host pid, once its jail wrote it; 0 before. */
  pid: number;
}

export class FencingWatchdog {
  private fenceAt = 0;
  private readonly children = new Map<number, Child>();
  private readonly nodes = new Set<Deno.Conn>();
  private idleSince = performance.now();
  private listener: Deno.Listener | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private readonly done: PromiseWithResolvers<void> = Promise.withResolvers();

  constructor(private readonly paths: WatchdogPaths) {}

  /** Serves until idle; resolves when it exits. */
  async run(): Promise<void> {
    if (await answers(this.paths.socket)) {
      log.info("a fencing watchdog already serves this data dir", { socket: this.paths.socket });
      return;
    }
    await Deno.remove(this.paths.socket).catch(() => {});
    this.listener = Deno.listen({ transport: "unix", path: this.paths.socket });
    await writeFileDurably(this.paths.pidfile, `${Deno.pid}\n`);
    log.info("fencing watchdog serving", { socket: this.paths.socket });
    this.timer = setInterval(() => this.check(), CHECK_EVERY_MS);
    void this.accept(this.listener);
    await this.done.promise;
  }

  private async accept(listener: Deno.Listener): Promise<void> {
    try {
      for await (const conn of listener) void this.serve(conn);
    } catch { /* closed on exit */ }
  }

  /** One node connection: requests in order, each answered before the next is read. */
  private async serve(conn: Deno.Conn): Promise<void> {
    this.nodes.add(conn);
    try {
      for await (const line of lines(conn)) {
        await sendLine(conn, await this.handle(JSON.parse(line) as WatchdogRequest));
      }
    } catch (err) {
      log.debug("node connection failed", { error: String(err) });
    } finally {
      this.nodes.delete(conn);
      this.idleSince = performance.now();
      try {
        conn.close();
      } catch { /* already closed */ }
      log.info("node detached", { fenceInMs: this.fenceAt - bootTimeMs() });
    }
  }

  private async handle(req: WatchdogRequest): Promise<WatchdogReply> {
    try {
      switch (req.op) {
        case "hello":
          return { ok: true, hello: this.hello() };
        case "feed":
          this.fenceAt = req.fenceAt;
          return { ok: true };
        case "spawn":
          return { ok: true, pid: await this.spawn(req.name, req.argv, req.logPath, req.pidfile) };
      }
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  }

  private hello(): HelloReply {
    const children = [...this.children.values()].filter((c) => c.pid)
      .map((c) => ({ name: c.name, pid: c.pid }));
    return { pid: Deno.pid, fenceAt: this.fenceAt, children };
  }

  /** Starts `argv` jailed (see {@link jailedCommand}); QEMU's host pid once it is known. */
  private async spawn(
    name: string,
    argv: string[],
    logPath: string,
    pidfile: string,
  ): Promise<number> {
    if (bootTimeMs() >= this.fenceAt) {
      throw new Error("this host holds no lease: not starting an HA VM");
    }
    await Deno.remove(pidfile).catch(() => {});
    const [cmd, ...args] = jailedCommand(argv, { logPath, pidfile, watchdogPid: Deno.pid });
    const process = new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const child: Child = { name, process, pid: 0 };
    // In the map at once: a lease running out while QEMU starts fences it too.
    this.children.set(process.pid, child);
    let exited = false;
    process.status.then((status) => {
      exited = true;
      this.children.delete(process.pid);
      this.idleSince = performance.now();
      log.info("HA QEMU exited", {
        vm: name,
        pid: child.pid,
        jail: process.pid,
        code: status.code,
        signal: status.signal,
      });
    });
    const deadline = performance.now() + JAIL_START_MS;
    while (!child.pid) {
      const text = await Deno.readTextFile(pidfile).catch(() => "");
      if (/^\d+\n$/.test(text)) child.pid = Number(text);
      else if (exited) throw new Error(`the jail of ${name} exited before starting QEMU`);
      else if (performance.now() > deadline) {
        process.kill("SIGKILL");
        throw new Error(`the jail of ${name} did not start QEMU within ${JAIL_START_MS} ms`);
      } else await new Promise((r) => setTimeout(r, 10));
    }
    log.info("HA QEMU started", { vm: name, pid: child.pid, jail: process.pid });
    return child.pid;
  }

  private check(): void {
    if (this.children.size && bootTimeMs() >= this.fenceAt) this.fence();
    const idle = !this.children.size && !this.nodes.size;
    if (idle && performance.now() - this.idleSince > IDLE_EXIT_MS) void this.exit();
  }

  /** The lease ran out unfed: kill every HA QEMU now. */
  private fence(): void {
    for (const child of this.children.values()) {
      log.warn("lease ran out unfed: fencing HA VM", { vm: child.name, pid: child.pid });
      try {
        child.process.kill("SIGKILL");
      } catch { /* already gone */ }
    }
  }

  private async exit(): Promise<void> {
    if (this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
    this.listener?.close();
    // Only our own files: a newer watchdog may have taken the path over.
    if ((await Deno.readTextFile(this.paths.pidfile).catch(() => "")).trim() === `${Deno.pid}`) {
      await Deno.remove(this.paths.socket).catch(() => {});
      await Deno.remove(this.paths.pidfile).catch(() => {});
    }
    log.info("fencing watchdog idle: exiting");
    this.done.resolve();
  }
}

/** Whether something listens on the unix socket at `path`. */
async function answers(path: string): Promise<boolean> {
  try {
    (await Deno.connect({ transport: "unix", path })).close();
    return true;
  } catch {
    return false;
  }
}

/** Entry point of `novactl host watchdog --data-dir DIR`. */
export async function runWatchdog(dataDir: string): Promise<void> {
  setLogContext({ component: "watchdog" });
  await new FencingWatchdog(watchdogPaths(dataDir)).run();
}
