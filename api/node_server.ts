/**
 * The `node:https`/`node:http` listener, kept as a choice (`NOVACTL_LISTENER=node`,
 * see api/server.ts) because it enforces connection limits that `Deno.serve` lacks,
 * at ~0.2 ms more per request. Peers authenticate exactly as on the Deno.serve
 * listener: signed requests (core/peer/signature.ts), verified here before routing;
 * requests reach Hono through `@hono/node-server`'s listener.
 *
 * Deno's node:http does not enforce headersTimeout/keepAliveTimeout, so the
 * limits are enforced here per connection: a header timer (a slowloris
 * connection that never completes its request is destroyed), an idle timer
 * after each response, and a cap on open connections.
 */
import { createServer as createHttpsServer } from "node:https";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import type { Socket } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { createCa, type NodeTls } from "../core/pki/mod.ts";
import { NODE_CERT_PATH, SignatureVerifier } from "../core/peer/signature.ts";
import type { ApiServer, FetchHandler } from "./server.ts";

/** Unwanted body bytes read and dropped after an early answer, before the connection is cut. */
const DISCARD_LIMIT_BYTES = 8 << 20;
/** How long an early-answered request may go on sending before its connection is cut. */
const DISCARD_TIMEOUT_MS = 5_000;

export interface ConnectionLimits {
  /** A connection must complete a request's headers within this after opening or going idle. */
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

interface ConnState {
  timer: ReturnType<typeof setTimeout> | undefined;
  inflight: number;
}

/** The transport-level socket under a TLS socket (timers and counts live on it). */
function rawOf(sock: Socket): Socket {
  return ((sock as { _parent?: Socket })._parent) ?? sock;
}

/** The API served by node:https (or node:http), with connection limits (module doc). */
export class NodeApiServer implements ApiServer {
  readonly #server: ReturnType<typeof createHttpsServer> | ReturnType<typeof createHttpServer>;
  readonly #insecure: boolean;
  readonly #limits: ConnectionLimits;
  readonly #conns = new Map<Socket, ConnState>();
  #verifier: SignatureVerifier | null = null;
  #ownCert: string | null = null;
  #handler: FetchHandler = () =>
    Response.json({ error: { code: "unavailable", message: "node is starting" } }, {
      status: 503,
    });
  #port = 0;
  /** Resolves when the server has closed. */
  readonly finished: Promise<void>;

  private constructor(
    server: ReturnType<typeof createHttpsServer> | ReturnType<typeof createHttpServer>,
    insecure: boolean,
    limits: ConnectionLimits,
  ) {
    this.#server = server;
    this.#insecure = insecure;
    this.#limits = limits;
    this.finished = new Promise((resolve) => server.once("close", () => resolve()));
    server.on("connection", (sock: Socket) => this.#onConnection(sock));
    const listener = getRequestListener(
      (request, env) =>
        this.#dispatch(
          request,
          (env as { incoming: IncomingMessage }).incoming.socket.remoteAddress ?? "",
        ),
      // autoCleanupIncoming (the default) matters: it wraps the body so that a handler
      // giving up on it does not cancel Deno's Readable.toWeb stream, whose late 'data'
      // events then throw an uncaught "cannot close or enqueue" and kill the process.
      { overrideGlobalObjects: false },
    );
    server.on("request", (incoming: IncomingMessage, outgoing: ServerResponse) => {
      this.#onRequest(incoming, outgoing);
      listener(incoming, outgoing);
    });
    // A failed handshake (a client that distrusts us, or garbage) is the client's problem.
    server.on("tlsClientError", (_err: unknown, sock: Socket) => sock.destroy());
    server.on("clientError", (_err: unknown, sock: Socket) => sock.destroy());
  }

  /**
   * Binds the port now (so `HOST:0` gets a kernel-chosen port with no window for
   * another process); TLS material can follow with {@link useTls} — until then the
   * listener presents a throwaway certificate and answers 503.
   */
  static async listen(opts: {
    hostname: string;
    port: number;
    insecure: boolean;
    tls?: NodeTls | null;
    limits?: ConnectionLimits;
  }): Promise<NodeApiServer> {
    let server;
    if (opts.insecure) {
      server = createHttpServer();
    } else {
      const initial = opts.tls
        ? { cert: opts.tls.certPem, key: opts.tls.keyPem, ca: opts.tls.caPem }
        : await throwawayCert();
      server = createHttpsServer(initial);
    }
    const api = new NodeApiServer(server, opts.insecure, opts.limits ?? defaultConnectionLimits());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port, opts.hostname, () => {
        server.off("error", reject);
        resolve();
      });
    });
    api.#port = (server.address() as { port: number }).port;
    return api;
  }

  get port(): number {
    return this.#port;
  }

  get insecure(): boolean {
    return this.#insecure;
  }

  /** Presents the node's certificate and accepts peer requests signed for `selfUrl`. */
  useTls(tls: NodeTls, selfUrl: string): Promise<void> {
    if (this.#insecure) return Promise.resolve();
    this.#verifier = new SignatureVerifier(tls, selfUrl);
    this.#ownCert = tls.certPem;
    (this.#server as ReturnType<typeof createHttpsServer>).setSecureContext({
      cert: tls.certPem,
      key: tls.keyPem,
    });
    return Promise.resolve();
  }

  #dispatch(req: Request, remoteAddr: string): Response | Promise<Response> {
    if (this.#ownCert && req.method === "GET" && req.url.endsWith(NODE_CERT_PATH)) {
      return new Response(this.#ownCert, { headers: { "content-type": "application/x-pem-file" } });
    }
    if (this.#insecure || !this.#verifier) {
      return this.#handler(req, { remoteAddr, tlsPeer: null, insecure: this.#insecure });
    }
    return this.#verifier.verify(req).then((v) =>
      this.#handler(v?.request ?? req, { remoteAddr, tlsPeer: v?.proof ?? null, insecure: false })
    );
  }

  /** Routes requests to `handler` from now on. */
  serveWith(handler: FetchHandler): void {
    this.#handler = handler;
  }

  /** Stops accepting, closes every connection. */
  async shutdown(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const [sock, st] of this.#conns) {
      clearTimeout(st.timer);
      sock.destroy();
    }
    this.#conns.clear();
    await closed;
  }

  #onConnection(sock: Socket): void {
    if (this.#conns.size >= this.#limits.maxConnections) {
      sock.destroy();
      return;
    }
    const st: ConnState = { timer: undefined, inflight: 0 };
    this.#conns.set(sock, st);
    this.#arm(sock, st, this.#limits.headersTimeoutMs);
    sock.once("close", () => {
      clearTimeout(st.timer);
      this.#conns.delete(sock);
    });
  }

  #arm(sock: Socket, st: ConnState, ms: number): void {
    clearTimeout(st.timer);
    st.timer = setTimeout(() => {
      if (st.inflight === 0) sock.destroy();
    }, ms);
  }

  #onRequest(incoming: IncomingMessage, outgoing: ServerResponse): void {
    const raw = rawOf(incoming.socket);
    const st = this.#conns.get(raw);
    if (!st) return;
    clearTimeout(st.timer);
    st.inflight++;
    let done = false;
    const finished = () => {
      if (done) return;
      done = true;
      st.inflight--;
      if (!incoming.complete) {
        this.#discardRestOf(incoming, raw);
        return;
      }
      // The next request's headers must arrive within the idle window.
      if (st.inflight === 0) this.#arm(raw, st, this.#limits.idleTimeoutMs);
    };
    outgoing.once("finish", finished);
    outgoing.once("close", finished);
  }

  /**
   * The handler answered without reading the whole body (413, 401, ...). The rest is read
   * and thrown away, up to {@link DISCARD_LIMIT_BYTES}, so a client that is still sending gets
   * to read the answer instead of a reset; past that (a 200 MB POST), or after
   * {@link DISCARD_TIMEOUT_MS}, the connection is cut. Nothing is kept: memory stays flat.
   * The connection is closed either way (a half-read body leaves no request boundary).
   */
  #discardRestOf(incoming: IncomingMessage, raw: Socket): void {
    // @hono/node-server would drain it (up to 64 MiB, buffered): only this reader runs.
    const resume = incoming.resume.bind(incoming);
    incoming.resume = () => incoming;
    incoming.removeAllListeners("data");
    let discarded = 0;
    const cut = setTimeout(() => raw.destroy(), DISCARD_TIMEOUT_MS);
    incoming.on("data", (chunk: Uint8Array) => {
      discarded += chunk.length;
      if (discarded > DISCARD_LIMIT_BYTES) {
        clearTimeout(cut);
        raw.destroy();
      }
    });
    incoming.once("end", () => {
      clearTimeout(cut);
      // Through the TLS socket, so the client gets close_notify after the answer, not a bare FIN.
      incoming.socket.end();
      setTimeout(() => raw.destroy(), 1_000);
    });
    resume();
  }
}

/** A self-signed certificate served only until the node's own is ready (bootstrap, join). */
async function throwawayCert(): Promise<{ cert: string; key: string }> {
  const ca = await createCa("starting");
  return { cert: ca.certPem, key: ca.keyPem };
}
