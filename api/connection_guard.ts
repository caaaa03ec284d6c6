/**
 * The node's port: TLS and the connection limits, in front of `Deno.serve`.
 *
 * `Deno.serve` (Deno 2.9) has no header timeout, no idle timeout and no
 * connection cap (a slowloris client sending one header line a second keeps
 * its connection forever), and over TLS it holds back the end of an answer of
 * 16–64 KiB for 40 ms (its TLS records go out in separate writes and it sets no
 * TCP_NODELAY: 44 ms p50 for a 20 KB answer, measured). `node:https` has hooks
 * for the limits but its HTTP layer stalls: about one keep-alive request in a
 * thousand, one in eight after a multi-megabyte answer, is never answered.
 *
 * So the guard owns the port and terminates TLS with `node:tls` (Deno's rustls
 * underneath; no stall in 8,000 round trips measured, TCP_NODELAY set, HTTP/1.1
 * by ALPN). Each connection's plaintext is spliced to the real server, plain
 * `Deno.serve` on a loopback port. The server tells the guard when a request on
 * a connection starts (headers complete) and ends (answer sent), by the port its
 * side of the splice comes from; the guard then runs Node's rules:
 * - a connection must complete its TLS handshake and a request's headers within
 *   `headersTimeoutMs` of opening,
 * - a connection with no request in flight is closed after `idleTimeoutMs`,
 * - connections beyond `maxConnections` are closed at once.
 * With `--insecure-http` the same guard splices plain TCP.
 */
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import type { Socket } from "node:net";
import { log } from "../core/log/mod.ts";

export interface ConnectionLimits {
  /** A new connection must complete its handshake and a request's headers within this. */
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

/** The certificate and key the guard presents. */
export interface GuardCertificate {
  cert: string;
  key: string;
}

/** One client connection and its splice to the server. */
export interface GuardedConnection {
  /** The client's address. */
  readonly remoteHost: string;
  /** Requests whose response is not yet sent. */
  inflight: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  close(): void;
}

const COPY_BUFFER_BYTES = 64 * 1024;

export class ConnectionGuard {
  readonly #limits: ConnectionLimits;
  readonly #tls: ReturnType<typeof createTlsServer> | null;
  readonly #tcp: Deno.TcpListener | null;
  #port = 0;
  /** By the local port of the guard's socket to the server (the server's `remoteAddr.port`). */
  readonly #byInnerPort = new Map<number, GuardedConnection>();
  /** Every accepted connection, handshaking ones included (the cap counts them all). */
  readonly #open = new Set<GuardedConnection>();
  #target = 0;
  #closed = false;

  private constructor(
    limits: ConnectionLimits,
    tls: ReturnType<typeof createTlsServer> | null,
    tcp: Deno.TcpListener | null,
  ) {
    this.#limits = limits;
    this.#tls = tls;
    this.#tcp = tcp;
  }

  /**
   * Binds the node's port now (`port` 0: kernel-chosen); connections wait for
   * {@link forwardTo}. With `certificate`, clients speak TLS (HTTP/1.1).
   */
  static async listen(opts: {
    hostname: string;
    port: number;
    certificate: GuardCertificate | null;
    limits?: ConnectionLimits;
  }): Promise<ConnectionGuard> {
    const limits = opts.limits ?? defaultConnectionLimits();
    if (!opts.certificate) {
      const tcp = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
      const guard = new ConnectionGuard(limits, null, tcp);
      guard.#port = tcp.addr.port;
      void guard.#acceptPlain(tcp);
      return guard;
    }
    const server = createTlsServer({
      cert: opts.certificate.cert,
      key: opts.certificate.key,
      ALPNProtocols: ["http/1.1"],
      handshakeTimeout: limits.headersTimeoutMs,
    });
    const guard = new ConnectionGuard(limits, server, null);
    server.on("connection", (raw: Socket) => guard.#admitTls(raw));
    server.on("secureConnection", (sock: TLSSocket) => guard.#spliceTls(sock));
    // A failed handshake (a client that distrusts us, or garbage) is the client's problem.
    server.on("tlsClientError", (_err: unknown, sock: Socket) => sock.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port, opts.hostname, () => {
        server.off("error", reject);
        resolve();
      });
    });
    guard.#port = (server.address() as { port: number }).port;
    return guard;
  }

  get port(): number {
    return this.#port;
  }

  get openConnections(): number {
    return this.#open.size;
  }

  /** Presents `certificate` to new connections from now on. */
  useCertificate(certificate: GuardCertificate): void {
    this.#tls?.setSecureContext({ cert: certificate.cert, key: certificate.key });
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
      this.#tcp?.close();
    } catch { /* already closed */ }
    this.#tls?.close();
    for (const conn of [...this.#open]) conn.close();
  }

  // ---- plain TCP -------------------------------------------------------------

  async #acceptPlain(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const client of listener) void this.#splicePlain(client);
    } catch (err) {
      if (!this.#closed) log.error("listener failed", { error: String(err) });
    }
  }

  async #splicePlain(client: Deno.TcpConn): Promise<void> {
    const conn = this.#admit(client.remoteAddr.hostname, () => client.close());
    if (!conn) return;
    client.setNoDelay(true);
    const server = await this.#connectServer(conn);
    if (!server) return;
    await Promise.all([copy(client, server), copy(server, client)]);
    conn.close();
  }

  // ---- TLS -------------------------------------------------------------------

  /** A TCP connection arrived (its handshake follows): counted, and on the header clock. */
  #admitTls(raw: Socket): void {
    const conn = this.#admit(raw.remoteAddress ?? "", () => raw.destroy());
    if (!conn) return;
    raw.setNoDelay(true);
    tlsConnections.set(raw, conn);
  }

  async #spliceTls(sock: TLSSocket): Promise<void> {
    const raw = rawOf(sock);
    const conn = tlsConnections.get(raw);
    if (!conn) return void sock.destroy();
    const server = await this.#connectServer(conn);
    if (!server) return;
    let writing = Promise.resolve();
    // Client → server: pause the socket while a chunk is written (backpressure).
    sock.on("data", (chunk: Uint8Array) => {
      sock.pause();
      writing = writeAll(server, chunk).then(() => void sock.resume(), () => conn.close());
    });
    sock.once("end", () => void writing.then(() => server.closeWrite()).catch(() => {}));
    sock.once("close", () => conn.close());
    sock.on("error", () => conn.close());
    // Server → client.
    const buf = new Uint8Array(COPY_BUFFER_BYTES);
    try {
      for (;;) {
        const n = await server.read(buf);
        if (n === null) break;
        if (!sock.write(buf.slice(0, n))) await drained(sock);
      }
      sock.end();
    } catch {
      conn.close();
    }
  }

  // ---- shared ----------------------------------------------------------------

  /** Counts a new connection, or refuses it (over the cap, or closing): null then. */
  #admit(remoteHost: string, destroy: () => void): GuardedConnection | null {
    if (this.#closed || this.#open.size >= this.#limits.maxConnections || !this.#target) {
      destroy();
      return null;
    }
    let closed = false;
    const extra: (() => void)[] = [];
    const conn: GuardedConnection = {
      remoteHost,
      inflight: 0,
      timer: undefined,
      close: () => {
        if (closed) return;
        closed = true;
        clearTimeout(conn.timer);
        this.#open.delete(conn);
        destroy();
        for (const f of extra) f();
      },
    };
    innerClosers.set(conn, extra);
    this.#open.add(conn);
    this.#arm(conn, this.#limits.headersTimeoutMs);
    return conn;
  }

  /** The guard's side of the splice, registered by its local port; null when unreachable. */
  async #connectServer(conn: GuardedConnection): Promise<Deno.TcpConn | null> {
    let server: Deno.TcpConn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
    } catch (err) {
      log.warn("cannot reach the API server behind the guard", { error: String(err) });
      conn.close();
      return null;
    }
    server.setNoDelay(true);
    const innerPort = server.localAddr.port;
    this.#byInnerPort.set(innerPort, conn);
    innerClosers.get(conn)!.push(() => {
      this.#byInnerPort.delete(innerPort);
      try {
        server.close();
      } catch { /* already closed */ }
    });
    if (this.#closed) {
      conn.close();
      return null;
    }
    return server;
  }

  #arm(conn: GuardedConnection, ms: number): void {
    clearTimeout(conn.timer);
    conn.timer = setTimeout(() => {
      if (conn.inflight === 0) conn.close();
    }, ms);
  }
}

/** The guarded connection of each raw TCP socket under a TLS one. */
const tlsConnections = new WeakMap<Socket, GuardedConnection>();
/** What closing a connection also closes (its splice to the server). */
const innerClosers = new WeakMap<GuardedConnection, (() => void)[]>();

/** The transport-level socket under a TLS socket. */
function rawOf(sock: TLSSocket): Socket {
  return ((sock as unknown as { _parent?: Socket })._parent) ?? sock;
}

function drained(sock: TLSSocket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      sock.off("drain", done);
      sock.off("close", done);
      resolve();
    };
    sock.on("drain", done);
    sock.on("close", done);
  });
}

async function writeAll(to: Deno.Conn, chunk: Uint8Array): Promise<void> {
  for (let off = 0; off < chunk.length;) off += await to.write(chunk.subarray(off));
}

/** Copies `from` to `to` until `from` ends, then half-closes `to` (the other direction goes on). */
async function copy(from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(COPY_BUFFER_BYTES);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      await writeAll(to, buf.subarray(0, n));
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
