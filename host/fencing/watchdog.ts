/**
 * `novactl host watchdog`: the per-host fencing supervisor. It is not the node
 * process, so a node that dies, hangs (SIGSTOP) or is cut off from the leader
 * cannot keep an HA VM running past its lease:
 *
 * 1. The node starts it in its own session (it outlives the node) and feeds it
 *    after every granted lease renewal with the instant HA VMs must be dead by
 *    (`fenceAt`, CLOCK_BOOTTIME ms, the clock both processes share).
 * 2. HA QEMUs are its direct children, started through
 *    `setpriv --pdeathsig KILL` without `-daemonize`: PR_SET_PDEATHSIG refers
 *    to the parent thread and is cleared by fork, so only a direct, never
 *    forking child dies with the watchdog.
 * 3. Once `fenceAt` passes unfed it SIGKILLs every child, whatever the node
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

interface Child {
  name: string;
  process: Deno.ChildProcess;
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
        await sendLine(conn, this.handle(JSON.parse(line) as WatchdogRequest));
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

  private handle(req: WatchdogRequest): WatchdogReply {
    try {
      switch (req.op) {
        case "hello":
          return { ok: true, hello: this.hello() };
        case "feed":
          this.fenceAt = req.fenceAt;
          return { ok: true };
        case "spawn":
          return { ok: true, pid: this.spawn(req.name, req.argv, req.logPath) };
      }
    } catch (err) {
      return { ok: false, error: (err as Error).message };
    }
  }

  private hello(): HelloReply {
    const children = [...this.children].map(([pid, c]) => ({ name: c.name, pid }));
    return { pid: Deno.pid, fenceAt: this.fenceAt, children };
  }

  private spawn(name: string, argv: string[], logPath: string): number {
    if (bootTimeMs() >= this.fenceAt) {
      throw new Error("this host holds no lease: not starting an HA VM");
    }
    // sh only redirects stderr to the VM's log and execs: the pid is QEMU's, a child of ours.
    const process = new Deno.Command("/bin/sh", {
      args: [
        "-c",
        'log="$1"; shift; exec "$@" 2>>"$log"',
        "sh",
        logPath,
        SETPRIV,
        "--pdeathsig",
        "KILL",
        "--",
        ...argv,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.children.set(process.pid, { name, process });
    process.status.then((status) => {
      this.children.delete(process.pid);
      this.idleSince = performance.now();
      log.info("HA QEMU exited", {
        vm: name,
        pid: process.pid,
        code: status.code,
        signal: status.signal,
      });
    });
    log.info("HA QEMU started", { vm: name, pid: process.pid });
    return process.pid;
  }

  private check(): void {
    if (this.children.size && bootTimeMs() >= this.fenceAt) this.fence();
    const idle = !this.children.size && !this.nodes.size;
    if (idle && performance.now() - this.idleSince > IDLE_EXIT_MS) void this.exit();
  }

  /** The lease ran out unfed: kill every HA QEMU now. */
  private fence(): void {
    for (const [pid, child] of this.children) {
      log.warn("lease ran out unfed: fencing HA VM", { vm: child.name, pid });
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
