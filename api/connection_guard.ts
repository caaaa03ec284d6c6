/**
 * The node's port: TLS and the connection limits, in front of `Deno.serve`.
 *
 * `Deno.serve` (Deno 2.9) has no header timeout, idle timeout or connection cap,
 * and over TLS it holds every answer above ~800 bytes for the client's delayed
 * ACK (44 ms on loopback: it writes headers and body as separate TLS records
 * without TCP_NODELAY). `node:https` stalls keep-alive requests outright, and
 * `node:tls`'s own server keeps reading a paused socket (no backpressure).
 *
 * So the guard owns the port: a TCP listener (TCP_NODELAY), TLS terminated with
 * `node:tls` over a stream that reads the TCP connection only while the TLS
 * socket wants data — real backpressure (a paused reader held a client at 3 MiB)
 * and no delayed-ACK hold (a 20 KB answer in 0.27 ms) — and each connection's
 * plaintext spliced to plain `Deno.serve` on a loopback port. The server tells the
 * guard when a request on a connection starts and ends, by the port its side of
 * the splice comes from; the guard runs Node's rules:
 * - a connection must complete its TLS handshake and a request's headers within
 *   `headersTimeoutMs` of opening,
 * - a connection with no request in flight is closed after `idleTimeoutMs`,
 * - connections beyond `maxConnections` are closed at once.
 * With `--insecure-http` the same guard splices plain TCP.
 */
import { createSecureContext, type SecureContext, TLSSocket } from "node:tls";
import { Duplex } from "node:stream";
import { log } from "../core/log/mod.ts";
import { metrics } from "../core/metrics/mod.ts";

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
/** Decrypted bytes the TLS socket may hold unread before the guard stops reading the network. */
const TLS_READ_AHEAD_BYTES = 1 << 20;

export class ConnectionGuard {
  readonly #limits: ConnectionLimits;
  #context: SecureContext | null;
  readonly #tcp: Deno.TcpListener;
  #port = 0;
  /** By the local port of the guard's socket to the server (the server's `remoteAddr.port`). */
  readonly #byInnerPort = new Map<number, GuardedConnection>();
  /** Every accepted connection, handshaking ones included (the cap counts them all). */
  readonly #open = new Set<GuardedConnection>();
  #target = 0;
  #closed = false;

  private constructor(
    limits: ConnectionLimits,
    context: SecureContext | null,
    tcp: Deno.TcpListener,
  ) {
    this.#limits = limits;
    this.#context = context;
    this.#tcp = tcp;
  }

  /**
   * Binds the node's port now (`port` 0: kernel-chosen); connections wait for
   * {@link forwardTo}. With `certificate`, clients speak TLS (HTTP/1.1).
   */
  static listen(opts: {
    hostname: string;
    port: number;
    certificate: GuardCertificate | null;
    limits?: ConnectionLimits;
  }): Promise<ConnectionGuard> {
    const limits = opts.limits ?? defaultConnectionLimits();
    const tcp = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
    const context = opts.certificate ? contextOf(opts.certificate) : null;
    const guard = new ConnectionGuard(limits, context, tcp);
    guard.#port = tcp.addr.port;
    void guard.#accept(tcp);
    return Promise.resolve(guard);
  }

  get port(): number {
    return this.#port;
  }

  get openConnections(): number {
    return this.#open.size;
  }

  /** Presents `certificate` to new connections from now on. */
  useCertificate(certificate: GuardCertificate): void {
    if (this.#context) this.#context = contextOf(certificate);
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
      this.#tcp.close();
    } catch { /* already closed */ }
    for (const conn of [...this.#open]) conn.close();
  }

  // ---- accepting ---------------------------------------------------------------

  async #accept(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const client of listener) {
        if (this.#context) void this.#spliceTls(client, this.#context);
        else void this.#splicePlain(client);
      }
    } catch (err) {
      if (!this.#closed) log.error("listener failed", { error: String(err) });
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

  async #spliceTls(client: Deno.TcpConn, context: SecureContext): Promise<void> {
    const gated = gatedStream(client);
    const sock = new TLSSocket(gated.stream, {
      isServer: true,
      secureContext: context,
      ALPNProtocols: ["http/1.1"],
    });
    gated.readFor(sock);
    const conn = this.#admit(client.remoteAddr.hostname, () => {
      sock.destroy();
      try {
        client.close();
      } catch { /* already closed */ }
    });
    if (!conn) return;
    client.setNoDelay(true);
    sock.on("error", () => conn.close());
    sock.once("close", () => conn.close());
    // A failed handshake (a client that distrusts us, or garbage) is the client's problem.
    const secure = await new Promise<boolean>((resolve) => {
      sock.once("secure", () => resolve(true));
      sock.once("close", () => resolve(false));
    });
    if (!secure) return;
    const server = await this.#connectServer(conn);
    if (!server) return;
    let hungUp = false;
    conn.hangUp = () => {
      if (hungUp) return;
      hungUp = true;
      sock.pause();
      // The server sees the request end here; it finishes its answer and closes (below).
      server.closeWrite().catch(() => {});
      setTimeout(() => conn.close(), EARLY_ANSWER_GRACE_MS);
    };
    forwardClient(sock, server, conn, () => hungUp);
    // Server → client.
    const buf = new Uint8Array(COPY_BUFFER_BYTES);
    try {
      for (;;) {
        const n = await server.read(buf);
        if (n === null) break;
        if (!sock.write(buf.slice(0, n))) await drained(sock);
      }
    } catch { /* the server side closed */ }
    // The server is done with this connection: the answer is out, nothing more is read.
    conn.answered = true;
    sock.end();
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

/** What closing a connection also closes (its splice to the server). */
const innerClosers = new WeakMap<GuardedConnection, (() => void)[]>();

function contextOf(certificate: GuardCertificate): SecureContext {
  return createSecureContext({ cert: certificate.cert, key: certificate.key });
}

/**
 * The TCP connection as the stream a server-side TLSSocket reads and writes. It
 * reads the network only while the TLS socket wants data (not paused, less than
 * {@link TLS_READ_AHEAD_BYTES} decrypted and unread): a TLSSocket made by
 * `tls.createServer` in Deno goes on reading a paused socket, so backpressure is
 * given here.
 */
function gatedStream(conn: Deno.TcpConn): { stream: Duplex; readFor(tls: TLSSocket): void } {
  const buf = new Uint8Array(COPY_BUFFER_BYTES);
  let tls: TLSSocket | null = null;
  const stream: Duplex = new Duplex({
    read() {
      const pull = () =>
        conn.read(buf).then(
          (n) => stream.push(n === null ? null : buf.slice(0, n)),
          () => stream.push(null),
        );
      if (tls && (tls.isPaused() || tls.readableLength > TLS_READ_AHEAD_BYTES)) {
        tls.once("resume", pull);
      } else void pull();
    },
    write(chunk: Uint8Array, _encoding, done) {
      writeAll(conn, chunk).then(() => done(), (err) => done(err));
    },
    final(done) {
      conn.closeWrite().then(() => done(), () => done());
    },
    destroy(_err, done) {
      try {
        conn.close();
      } catch { /* already closed */ }
      done(null);
    },
  });
  return { stream, readFor: (s) => tls = s };
}

/**
 * Client → server over TLS, in order. The TLS socket is paused while a chunk is
 * written to the server, which (through {@link gatedStream}) stops reading the
 * network: a client sending faster than the server reads is held back by TCP.
 * After an early answer its bytes are dropped and, past a bound, it is cut.
 */
function forwardClient(
  sock: TLSSocket,
  server: Deno.TcpConn,
  conn: GuardedConnection,
  hungUp: () => boolean,
): void {
  let dropped = 0;
  let ended = false;
  let writing = Promise.resolve();
  sock.on("data", (chunk: Uint8Array) => {
    if (conn.answered) {
      dropped += chunk.length;
      if (dropped > EARLY_ANSWER_DROP_BYTES) conn.hangUp();
      return;
    }
    sock.pause();
    writing = writing.then(() => writeAll(server, chunk)).then(
      () => void (hungUp() || sock.resume()),
      () => conn.close(),
    );
  });
  sock.once("end", () => {
    ended = true;
    void writing.then(() => {
      if (ended) return server.closeWrite();
    }).catch(() => {});
  });
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
