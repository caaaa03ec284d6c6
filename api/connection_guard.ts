/**
 * The connection limits `Deno.serve` lacks, enforced in front of it.
 *
 * `Deno.serve` (Deno 2.9) has no header timeout, no idle timeout and no
 * connection cap: a slowloris client sending one header line a second keeps
 * its connection forever. `node:https` has hooks for all three but its HTTP
 * layer stalls: about one keep-alive request in a thousand (one in eight after
 * a multi-megabyte response) is never answered (measured; see api/server.ts).
 *
 * So the node's port is a plain TCP listener owned by this guard. Each client
 * connection is spliced, bytes unchanged (TLS stays end to end), to the real
 * server on a loopback port. The server tells the guard when a request on a
 * connection starts (headers complete) and ends (response sent), by the port
 * its side of the splice comes from; the guard then runs Node's rules:
 * - a connection must complete a request's headers within `headersTimeoutMs`
 *   of opening,
 * - a connection with no request in flight is closed after `idleTimeoutMs`,
 * - connections beyond `maxConnections` are closed at once.
 * The splice costs ~0.02 ms per request on loopback (node:https cost 0.07 ms more
 * than `Deno.serve` for the same request).
 */
import { log } from "../core/log/mod.ts";

export interface ConnectionLimits {
  /** A new connection must complete a request's headers within this. */
  headersTimeoutMs: number;
  /** A keep-alive connection with no request in flight is closed after this. */
  idleTimeoutMs: number;
  /** Connections beyond this are closed at once. */
  maxConnections: number;
}

function envMs(name: string, fallback: number): number {
  const v = Number(Deno.env.get(name));
  return Number.isSafeInteger(v) && v > 0 ? v : fallback;
}

/** Defaults; env NOVACTL_HEADERS_TIMEOUT_MS, NOVACTL_IDLE_TIMEOUT_MS, NOVACTL_MAX_CONNECTIONS. */
export function defaultConnectionLimits(): ConnectionLimits {
  return {
    headersTimeoutMs: envMs("NOVACTL_HEADERS_TIMEOUT_MS", 10_000),
    idleTimeoutMs: envMs("NOVACTL_IDLE_TIMEOUT_MS", 30_000),
    maxConnections: envMs("NOVACTL_MAX_CONNECTIONS", 1024),
  };
}

/** One client connection and its splice to the server. */
export interface GuardedConnection {
  /** The client's address. */
  readonly remote: Deno.NetAddr;
  /** Requests whose response is not yet sent. */
  inflight: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  close(): void;
}

const COPY_BUFFER_BYTES = 64 * 1024;

export class ConnectionGuard {
  readonly #listener: Deno.TcpListener;
  readonly #limits: ConnectionLimits;
  /** By the local port of the guard's socket to the server (the server's `remoteAddr.port`). */
  readonly #byInnerPort = new Map<number, GuardedConnection>();
  readonly #open = new Set<GuardedConnection>();
  #target = 0;
  #closed = false;

  private constructor(listener: Deno.TcpListener, limits: ConnectionLimits) {
    this.#listener = listener;
    this.#limits = limits;
    void this.#accept();
  }

  /** Binds the node's port now (`port` 0: kernel-chosen); connections wait for {@link forwardTo}. */
  static listen(opts: { hostname: string; port: number; limits?: ConnectionLimits }) {
    const listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
    return new ConnectionGuard(listener, opts.limits ?? defaultConnectionLimits());
  }

  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  get openConnections(): number {
    return this.#open.size;
  }

  /** New connections go to the server on loopback port `port` (existing ones stay where they are). */
  forwardTo(port: number): void {
    this.#target = port;
  }

  /** The client connection the server sees coming from loopback port `innerPort`. */
  connectionFrom(innerPort: number): GuardedConnection | undefined {
    return this.#byInnerPort.get(innerPort);
  }

  /** The server has a request's headers: no timer runs while it is answered. */
  requestStarted(conn: GuardedConnection): void {
    clearTimeout(conn.timer);
    conn.timer = undefined;
    conn.inflight++;
  }

  /** The server sent (or gave up on) a response: with nothing else in flight, the idle clock runs. */
  requestEnded(conn: GuardedConnection): void {
    conn.inflight = Math.max(0, conn.inflight - 1);
    if (conn.inflight === 0) this.#arm(conn, this.#limits.idleTimeoutMs);
  }

  /** Stops accepting and closes every connection. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch { /* already closed */ }
    for (const conn of [...this.#open]) conn.close();
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) void this.#splice(client);
    } catch (err) {
      if (!this.#closed) log.error("listener failed", { error: String(err) });
    }
  }

  async #splice(client: Deno.TcpConn): Promise<void> {
    if (this.#open.size >= this.#limits.maxConnections || !this.#target) {
      client.close();
      return;
    }
    let server: Deno.TcpConn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
    } catch (err) {
      log.warn("cannot reach the API server behind the guard", { error: String(err) });
      client.close();
      return;
    }
    client.setNoDelay(true);
    server.setNoDelay(true);
    const innerPort = server.localAddr.port;
    let closed = false;
    const conn: GuardedConnection = {
      remote: client.remoteAddr,
      inflight: 0,
      timer: undefined,
      close: () => {
        if (closed) return;
        closed = true;
        clearTimeout(conn.timer);
        this.#open.delete(conn);
        this.#byInnerPort.delete(innerPort);
        for (const c of [client, server]) {
          try {
            c.close();
          } catch { /* already closed */ }
        }
      },
    };
    this.#open.add(conn);
    this.#byInnerPort.set(innerPort, conn);
    this.#arm(conn, this.#limits.headersTimeoutMs);
    if (this.#closed) return conn.close();
    await Promise.all([copy(client, server), copy(server, client)]);
    conn.close();
  }

  #arm(conn: GuardedConnection, ms: number): void {
    clearTimeout(conn.timer);
    conn.timer = setTimeout(() => {
      if (conn.inflight === 0) conn.close();
    }, ms);
  }
}

/** Copies `from` to `to` until `from` ends, then half-closes `to` (the other direction goes on). */
async function copy(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(COPY_BUFFER_BYTES);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
    }
    await to.closeWrite();
  } catch {
    // Either side went away: the connection is over in both directions.
    try {
      from.close();
    } catch { /* already closed */ }
    try {
      to.close();
    } catch { /* already closed */ }
  }
}
