/**
 * The node's port: TLS and the connection limits, in front of `Deno.serve`.
 *
 * `Deno.serve` (Deno 2.9) has no header timeout, idle timeout or connection cap,
 * and over TLS it holds every answer above ~800 bytes for the client's delayed
 * ACK (44 ms on loopback: it writes headers and body as separate TLS records
 * without TCP_NODELAY). `node:https` stalls keep-alive requests outright, and
 * `node:tls`'s own server keeps reading a paused socket (no backpressure).
 *
 * So the guard owns the port: a `Deno.listenTls` listener (TCP_NODELAY set on it,
 * see ap./tcp_sockets.ts) whose connections are read only while the server takes
 * what was read — real backpressure — and each connection's plaintext spliced to
 * plain `Deno.serve` on a loopback port. The server tells the guard when a request
 * on a connection starts and ends, by the port its side of the splice comes from;
 * the guard runs Node's rules:
 * - a connection must complete its TLS handshake and a request's headers within
 *   `headersTimeoutMs` of opening,
 * - a connection with no request in flight is closed after `idleTimeoutMs`,
 * - connections beyond `maxConnections` are closed at once.
 * With `--insecure-http` the same guard splices plain TCP.
 *
 * TLS is Deno's own (rustls): until stop 22 it was `node:tls` over a gated
 * stream, which cost the server 88 µs of CPU per small request against 53–67 µs
 * now and 43–60 µs in plain TCP (64 clients on loopback).
 */
import { log } from "../core/log/mod.ts";
import { metrics } from "../core/metrics/mod.ts";
import { setListenerNoDelay, shutDownSocket } from "./tcp_sockets.ts";

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
  /**
   * The server answered without reading the whole request body (a 401, a 413), or is
   * done with the connection: the client's further bytes are dropped.
   */
  answered: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  /**
   * The connection became a WebSocket: it carries no more requests and is not idle between
   * frames, so the idle clock no longer applies (WebSocket pings find a dead peer).
   */
  upgraded: boolean;
  /**
   * Stops taking the client's bytes and lets the server finish: what it has
   * answered still reaches the client, which then gets the end of the stream
   * (close_notify and FIN); the connection is closed {@link EARLY_ANSWER_GRACE_MS}
   * later. A client that is still sending is held back by TCP meanwhile.
   */
  hangUp(): void;
  close(): void;
}

const COPY_BUFFER_BYTES = 64 * 1024;
/** After an early answer, how long a client may go on before its connection is cut. */
const EARLY_ANSWER_GRACE_MS = 1_000;
/** After an early answer, how many more body bytes a client may send before it is cut. */
const EARLY_ANSWER_DROP_BYTES = 8 << 20;

export class ConnectionGuard {
  readonly #limits: ConnectionLimits;
  readonly #hostname: string;
  /** The TLS listener's (null: plain TCP). */
  #certificate: GuardCertificate | null;
  /** Offered by ALPN, in order of preference. */
  readonly #alpn: string[];
  #listener: Deno.Listener;
  #port = 0;
  /** By the local port of the guard's socket to the server (the server's `remoteAddr.port`). */
  readonly #byInnerPort = new Map<number, GuardedConnection>();
  /** Every accepted connection, handshaking ones included (the cap counts them all). */
  readonly #open = new Set<GuardedConnection>();
  #target = 0;
  /** Servers for protocols negotiated by ALPN, when not {@link #target}'s. */
  #targetByAlpn: Record<string, number> = {};
  #closed = false;

  private constructor(
    limits: ConnectionLimits,
    hostname: string,
    certificate: GuardCertificate | null,
    alpn: string[],
    listener: Deno.Listener,
  ) {
    this.#limits = limits;
    this.#alpn = alpn;
    this.#hostname = hostname;
    this.#certificate = certificate;
    this.#listener = listener;
    this.#port = (listener.addr as Deno.NetAddr).port;
  }

  /**
   * Binds the node's port now (`port` 0: kernel-chosen); connections wait for
   * {@link forwardTo}. With `certificate`, clients speak TLS, offered `alpn` (default
   * HTTP/1.1 alone; the gRPC port offers h2 too).
   */
  static listen(opts: {
    hostname: string;
    port: number;
    certificate: GuardCertificate | null;
    limits?: ConnectionLimits;
    alpn?: string[];
  }): Promise<ConnectionGuard> {
    const limits = opts.limits ?? defaultConnectionLimits();
    const alpn = opts.alpn ?? ["http/1.1"];
    const listener = opts.certificate
      ? listenTls(opts.hostname, opts.port, opts.certificate, alpn)
      : Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
    const guard = new ConnectionGuard(limits, opts.hostname, opts.certificate, alpn, listener);
    void guard.#accept(listener);
    return Promise.resolve(guard);
  }

  get port(): number {
    return this.#port;
  }

  get openConnections(): number {
    return this.#open.size;
  }

  /**
   * Presents `certificate` to new connections from now on (a node's own, after the
   * throwaway one it listened with while starting). The port is bound again with
   * it; connections already open keep theirs.
   */
  async useCertificate(certificate: GuardCertificate): Promise<void> {
    if (!this.#certificate || this.#closed) return;
    this.#certificate = certificate;
    this.#listener = await listenTlsAgain(
      this.#listener,
      () => listenTls(this.#hostname, this.#port, certificate, this.#alpn),
    );
    if (this.#closed) this.#listener.close();
    else void this.#accept(this.#listener);
  }

  /**
   * New connections go to the server on loopback port `port` (existing ones stay where they
   * are), or to `byAlpn`'s server for the protocol a TLS client negotiated.
   */
  forwardTo(port: number, byAlpn: Record<string, number> = {}): void {
    this.#target = port;
    this.#targetByAlpn = byAlpn;
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

  /** The request on `conn` became a WebSocket (see {@link GuardedConnection.upgraded}). */
  upgraded(conn: GuardedConnection): void {
    conn.upgraded = true;
    clearTimeout(conn.timer);
    conn.timer = undefined;
  }

  /**
   * The server answered a request whose body it did not read: the client may still
   * be sending it, and no request can follow on this connection. Its bytes are
   * dropped from now on and the connection is closed after a grace period.
   */
  answeredEarly(conn: GuardedConnection): void {
    conn.answered = true;
    setTimeout(() => conn.hangUp(), EARLY_ANSWER_GRACE_MS);
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

  // ---- accepting ---------------------------------------------------------------

  async #accept(listener: Deno.Listener): Promise<void> {
    try {
      for await (const client of listener) {
        if (this.#certificate) void this.#spliceTls(client as Deno.TlsConn);
        else void this.#splicePlain(client as Deno.TcpConn);
      }
    } catch (err) {
      if (!this.#closed && listener === this.#listener) {
        log.error("listener failed", { error: String(err) });
      }
    }
  }

  async #splicePlain(client: Deno.TcpConn): Promise<void> {
    const conn = this.#admit(client.remoteAddr.hostname, () => {
      try {
        client.close();
      } catch { /* already closed: closing twice must not crash the node */ }
    });
    if (!conn) return;
    // Plain TCP is spliced as it comes (development only): no finer hang-up than closing.
    conn.hangUp = () => setTimeout(() => conn.close(), EARLY_ANSWER_GRACE_MS);
    client.setNoDelay(true);
    const server = await this.#connectServer(conn);
    if (!server) return;
    await Promise.all([copy(client, server), copy(server, client)]);
    conn.close();
  }

  async #spliceTls(client: Deno.TlsConn): Promise<void> {
    let handshaken = false;
    const conn = this.#admit(client.remoteAddr.hostname, () => {
      try {
        client.close();
      } catch { /* already closed */ }
      // Deno keeps the socket of a TLS connection closed before its handshake finished.
      if (!handshaken) shutDownSocket(this.#port, client.remoteAddr.port);
    });
    if (!conn) return;
    // The connection's timer (headersTimeoutMs) closes a handshake that takes too long.
    // A failed handshake (a client that distrusts us, or garbage) is the client's problem.
    let alpn: string | null;
    try {
      alpn = (await client.handshake()).alpnProtocol;
      handshaken = true;
    } catch {
      conn.close();
      return;
    }
    const server = await this.#connectServer(conn, alpn);
    if (!server) return;
    let hungUp = false;
    conn.hangUp = () => {
      if (hungUp) return;
      hungUp = true;
      // The server sees the request end here; it finishes its answer and closes (below).
      server.closeWrite().catch(() => {});
      setTimeout(() => conn.close(), EARLY_ANSWER_GRACE_MS);
    };
    void forwardClient(client, server, conn, () => hungUp);
    try {
      await copyAll(server, client);
    } catch { /* either side went away */ }
    // The server is done with this connection: the answer is out, nothing more is read.
    conn.answered = true;
    await client.closeWrite().catch(() => {});
    conn.hangUp();
  }

  // ---- shared ----------------------------------------------------------------

  #lastCapWarning = 0;

  /** A connection refused at the cap is counted, and said at most every 10 s. */
  #refusedOverCap(remoteHost: string): void {
    metrics.connectionsRefused.inc();
    const now = Date.now();
    if (now - this.#lastCapWarning < 10_000) return;
    this.#lastCapWarning = now;
    log.warn("connection refused: the listener is at its connection cap", {
      from: remoteHost,
      maxConnections: this.#limits.maxConnections,
      hint: "raise NOVACTL_MAX_CONNECTIONS",
    });
  }

  /** Counts a new connection, or refuses it (over the cap, or closing): null then. */
  #admit(remoteHost: string, destroy: () => void): GuardedConnection | null {
    if (this.#closed || !this.#target) {
      destroy();
      return null;
    }
    if (this.#open.size >= this.#limits.maxConnections) {
      this.#refusedOverCap(remoteHost);
      destroy();
      return null;
    }
    let closed = false;
    const extra: (() => void)[] = [];
    const conn: GuardedConnection = {
      remoteHost,
      inflight: 0,
      answered: false,
      upgraded: false,
      timer: undefined,
      hangUp: () => conn.close(),
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
  async #connectServer(
    conn: GuardedConnection,
    alpn: string | null = null,
  ): Promise<Deno.TcpConn | null> {
    let server: Deno.TcpConn;
    const port = (alpn !== null ? this.#targetByAlpn[alpn] : undefined) ?? this.#target;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port });
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
    if (conn.upgraded) return;
    conn.timer = setTimeout(() => {
      if (conn.inflight === 0) conn.close();
    }, ms);
  }
}

/** What closing a connection also closes (its splice to the server). */
const innerClosers = new WeakMap<GuardedConnection, (() => void)[]>();

/** A TLS listener on `hostname:port` whose connections have TCP_NODELAY. */
function listenTls(
  hostname: string,
  port: number,
  certificate: GuardCertificate,
  alpn: string[],
): Deno.TlsListener {
  const listener = Deno.listenTls({
    hostname,
    port,
    cert: certificate.cert,
    key: certificate.key,
    alpnProtocols: alpn,
  });
  setListenerNoDelay((listener.addr as Deno.NetAddr).port);
  return listener;
}

/**
 * Replaces `old` by the listener `listen` makes on the same port. Deno releases a
 * closed listener's socket once its pending accept is cancelled, a turn of the
 * event loop later, so the bind is retried meanwhile. The port is free between
 * the two for a moment: a connection refused then is retried as any refused
 * connection is (this happens once, while a node starts).
 */
async function listenTlsAgain(
  old: Deno.Listener,
  listen: () => Deno.TlsListener,
): Promise<Deno.TlsListener> {
  try {
    old.close();
  } catch { /* already closed */ }
  for (let attempt = 0;; attempt++) {
    try {
      return listen();
    } catch (err) {
      if (!(err instanceof Deno.errors.AddrInUse) || attempt >= REBIND_ATTEMPTS) throw err;
      await new Promise((resolve) => setTimeout(resolve, attempt < 10 ? 0 : 10));
    }
  }
}

/** About 1 s of retries: a port still bound by then is someone else's. */
const REBIND_ATTEMPTS = 100;

/**
 * Client → server over TLS, in order: the client is read only once what was read
 * has been written to the server, so a client sending faster than the server reads
 * is held back by TCP. After an early answer its bytes are dropped and, past a
 * bound, it is cut; after a hang-up it is no longer read.
 */
async function forwardClient(
  client: Deno.TlsConn,
  server: Deno.TcpConn,
  conn: GuardedConnection,
  hungUp: () => boolean,
): Promise<void> {
  const buf = new Uint8Array(COPY_BUFFER_BYTES);
  let dropped = 0;
  try {
    for (;;) {
      const n = await client.read(buf);
      if (hungUp()) return;
      if (n === null) {
        if (!conn.answered) await server.closeWrite();
        return;
      }
      if (conn.answered) {
        dropped += n;
        if (dropped > EARLY_ANSWER_DROP_BYTES) conn.hangUp();
        continue;
      }
      await writeAll(server, buf.subarray(0, n));
    }
  } catch {
    conn.close();
  }
}

/** Copies `from` to `to` until `from` ends. */
async function copyAll(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(COPY_BUFFER_BYTES);
  for (;;) {
    const n = await from.read(buf);
    if (n === null) return;
    await writeAll(to, buf.subarray(0, n));
  }
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
