/**
 * systemd's readiness protocol (sd_notify(3)) without libsystemd: the service manager
 * passes a unix datagram socket in `NOTIFY_SOCKET` (a path, or `@name` in the abstract
 * namespace) and reads `KEY=VALUE` lines from each datagram: `READY=1`, `STATUS=...`,
 * `STOPPING=1`.
 *
 * Deno sends unix datagrams with `Deno.listenDatagram({ transport: "unixpacket" })` (a
 * SOCK_DGRAM socket, despite the name) behind `--unstable-net`; deno.json, the installed
 * launcher and the compile task enable it. Node's dgram has no unix sockets, and shelling out
 * to `systemd-notify` would name the wrong process: with the default `NotifyAccess=main`
 * systemd takes a notification only from the service's main process. The sending socket is
 * bound in the abstract namespace, so nothing is left on disk.
 *
 * @module
 */
import { NovaError } from "../../core/errors/mod.ts";

type DatagramConn = Deno.DatagramConn;

export class SystemdNotifier {
  #conn: DatagramConn | null = null;
  #queue: Promise<void> = Promise.resolve();

  private constructor(readonly socket: string) {}

  /**
   * The notifier for this process's service manager, or null when none listens (not run by
   * systemd, or not as `Type=notify`). Unsets `NOTIFY_SOCKET`: the watchdog and QEMU
   * processes this node starts must not speak for the service.
   */
  static fromEnv(): SystemdNotifier | null {
    const socket = Deno.env.get("NOTIFY_SOCKET");
    if (!socket) return null;
    Deno.env.delete("NOTIFY_SOCKET");
    if (!socket.startsWith("/") && !socket.startsWith("@")) {
      throw new NovaError(
        "validation",
        `NOTIFY_SOCKET: "${socket}" is neither a socket path nor an @abstract name`,
      );
    }
    if (typeof (Deno as { listenDatagram?: unknown }).listenDatagram !== "function") {
      throw new NovaError(
        "validation",
        "NOTIFY_SOCKET is set (systemd Type=notify) but this Deno cannot send unix datagrams: " +
          "run it with --unstable-net (the installed launcher does)",
      );
    }
    return new SystemdNotifier(socket);
  }

  /** Sends one notification; calls are sent in order, and a failure is thrown to the caller. */
  notify(fields: Record<string, string>): Promise<void> {
    const message = Object.entries(fields).map(([k, v]) => `${k}=${v.replace(/\n/g, " ")}`)
      .join("\n");
    const sent = this.#queue.then(() => this.send(message));
    this.#queue = sent.catch(() => {});
    return sent;
  }

  close(): void {
    this.#conn?.close();
    this.#conn = null;
  }

  private async send(message: string): Promise<void> {
    this.#conn ??= Deno.listenDatagram({
      transport: "unixpacket",
      path: `\0novactl-notify-${Deno.pid}-${crypto.randomUUID()}`,
    });
    await this.#conn.send(new TextEncoder().encode(message), {
      transport: "unixpacket",
      path: abstractOrPath(this.socket),
    });
  }
}

/** `@name` is the abstract namespace, which the kernel spells with a leading NUL. */
function abstractOrPath(socket: string): string {
  return socket.startsWith("@") ? `\0${socket.slice(1)}` : socket;
}
