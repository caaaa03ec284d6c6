/**
 * The node's side of its fencing watchdog (see watchdog.ts): attach to the
 * running one or start it, feed it the lease, and have it start HA QEMUs.
 */
import { fileURLToPath } from "node:url";
import { UnavailableError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import { type FencedSpawner, processAlive } from "../kvm/qemu.ts";
import {
  type HelloReply,
  lines,
  sendLine,
  type WatchdogPaths,
  watchdogPaths,
  type WatchdogReply,
  type WatchdogRequest,
} from "./protocol.ts";

const START_TIMEOUT_MS = 30_000;

export class WatchdogClient implements FencedSpawner {
  private replies: AsyncGenerator<string>;
  private queue: Promise<unknown> = Promise.resolve();
  private lost = false;

  private constructor(private readonly conn: Deno.Conn, readonly hello: HelloReply) {
    this.replies = lines(conn);
  }

  /**
   * Attaches to the watchdog serving `dataDir`, starting one (in its own
   * session, so it survives this process) when none answers.
   */
  static async attach(dataDir: string, command = selfCommand()): Promise<WatchdogClient> {
    const paths = watchdogPaths(dataDir);
    const running = await WatchdogClient.connect(paths).catch(() => null);
    if (running) {
      log.info("re-attached to the fencing watchdog", {
        pid: running.pid,
        children: running.hello.children.length,
      });
      return running;
    }
    await startWatchdog(dataDir, paths, command);
    const deadline = performance.now() + START_TIMEOUT_MS;
    for (;;) {
      try {
        const client = await WatchdogClient.connect(paths);
        log.info("started the fencing watchdog", { pid: client.pid });
        return client;
      } catch (err) {
        if (performance.now() > deadline) {
          throw new UnavailableError(`fencing watchdog did not start: ${(err as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  /** What the watchdog serving `dataDir` says, without starting one; null when none answers. */
  static async probe(dataDir: string): Promise<HelloReply | null> {
    const client = await WatchdogClient.connect(watchdogPaths(dataDir)).catch(() => null);
    client?.close();
    return client?.hello ?? null;
  }

  private static async connect(paths: WatchdogPaths): Promise<WatchdogClient> {
    const conn = await Deno.connect({ transport: "unix", path: paths.socket });
    const replies = lines(conn);
    await sendLine(conn, { op: "hello" } satisfies WatchdogRequest);
    const first = await replies.next();
    if (first.done) {
      conn.close();
      throw new UnavailableError("watchdog closed the connection");
    }
    const reply = JSON.parse(first.value) as WatchdogReply;
    if (!reply.ok || !reply.hello) {
      conn.close();
      throw new UnavailableError("watchdog did not say hello");
    }
    const client = new WatchdogClient(conn, reply.hello);
    client.replies = replies;
    return client;
  }

  get pid(): number {
    return this.hello.pid;
  }

  /**
   * Whether the watchdog process still lives. Checked through /proc, not the
   * socket: the kernel kills its children as it exits, so anyone who sees an
   * HA QEMU gone also sees the watchdog gone.
   */
  alive(): boolean {
    return !this.lost && processAlive(this.pid);
  }

  /** HA VMs may run until `fenceAt` (CLOCK_BOOTTIME ms). */
  async feed(fenceAt: number): Promise<void> {
    await this.request({ op: "feed", fenceAt });
  }

  async spawn(name: string, argv: string[], logPath: string, pidfile: string): Promise<number> {
    const reply = await this.request({ op: "spawn", name, argv, logPath, pidfile });
    return reply.pid!;
  }

  close(): void {
    this.lost = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  /** One request at a time: each reply is the next line. */
  private request(req: WatchdogRequest): Promise<WatchdogReply & { ok: true }> {
    const run = async () => {
      if (this.lost) throw new UnavailableError("the fencing watchdog is gone");
      let reply: WatchdogReply;
      try {
        await sendLine(this.conn, req);
        const next = await this.replies.next();
        if (next.done) throw new Error("connection closed");
        reply = JSON.parse(next.value) as WatchdogReply;
      } catch (err) {
        this.markLost();
        throw new UnavailableError(`the fencing watchdog is gone: ${(err as Error).message}`);
      }
      if (!reply.ok) throw new UnavailableError(`fencing watchdog: ${reply.error}`);
      return reply;
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => {});
    return result;
  }

  /** The connection failed: the watchdog is taken for gone. */
  private markLost(): void {
    this.close();
  }
}

/** This program's own command line, to run `host watchdog` with. */
export function selfCommand(): string[] {
  if (Deno.build.standalone) return [Deno.execPath()];
  return [Deno.execPath(), "run", "-A", fileURLToPath(Deno.mainModule)];
}

/** Starts `novactl host watchdog` detached (own session), its output appended to its log. */
async function startWatchdog(
  dataDir: string,
  paths: WatchdogPaths,
  command: string[],
): Promise<void> {
  await Deno.remove(paths.socket).catch(() => {});
  const child = new Deno.Command("/bin/sh", {
    args: [
      "-c",
      'log="$1"; shift; exec "$@" >>"$log" 2>&1',
      "sh",
      paths.log,
      ...command,
      "host",
      "watchdog",
      "--data-dir",
      dataDir,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
  child.status.catch(() => {});
}
