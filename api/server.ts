/**
 * The node's one listener (`--listen`): HTTPS with the node's certificate by
 * default, or plain HTTP with `--insecure-http` (loopback only). Clients and
 * peers share it.
 *
 * Requests are served by `Deno.serve` on a loopback port behind the node's
 * port, which belongs to a {@link ConnectionGuard} (api/connection_guard.ts):
 * `Deno.serve` enforces no header timeout, idle timeout or connection cap, so
 * the guard does, splicing each connection's bytes (TLS stays end to end) and
 * hearing from here when each request starts and ends.
 *
 * `node:https` served this before, with mutual TLS; it was dropped because its
 * HTTP layer stalls: measured on Deno 2.9.6, 5 of 40 keep-alive requests after a
 * 14 MB response and 2 of 2,000 small ones were never answered (the same client
 * against `Deno.serve`: 0 of 3,000). It also cost ~0.07 ms more per request.
 * `Deno.serve` cannot ask for client certificates, so peers authenticate each
 * request with a signature made with their node key (core/peer/signature.ts,
 * "TLS plus signed requests" in issue 9); the signature is checked here, before
 * routing, and what it proves is handed to the application as `tlsPeer`
 * (api/auth.ts decides membership from it). On a plain listener peers send
 * their per-node credential instead.
 *
 * KNOWN COST (Deno 2.9.6): over TLS, `Deno.serve` writes an answer's headers and
 * body in separate TLS records without TCP_NODELAY, so an answer of more than
 * ~800 bytes, whatever the method, waits for the client's delayed ACK: 44 ms p50
 * on loopback, curl included (300 B: 0.1 ms; 800 B to 40 KB: 44 ms;
 * `Deno.listenTls` does the same from 16 KiB). The Raft path's answers are smaller
 * and are not held. Two ways out were
 * measured and not kept: `node:https` stalls keep-alive requests outright (above),
 * and terminating TLS in the guard with `node:tls` removed the wait but has no
 * backpressure (Deno's node:tls reads a paused socket on: 100 MB taken into
 * memory while paused), so an early 413 could no longer keep memory flat.
 */
import {
  NODE_CERT_PATH,
  PEER_CERT_HEADER,
  PEER_SIGNATURE_HEADER,
  type PeerProof,
  SignatureVerifier,
} from "../core/peer/signature.ts";
import { createCa, type NodeTls } from "../core/pki/mod.ts";
import {
  ConnectionGuard,
  type ConnectionLimits,
  type GuardedConnection,
} from "./connection_guard.ts";

/** What a signed peer request proved about its sender (null: unsigned, or a plain listener). */
export type TlsPeer = PeerProof;

/** Hono's `c.env` for requests served here. */
export interface ServerBindings {
  /** The client's address (the socket's), for logs and audit. */
  remoteAddr: string;
  /** What the request's peer signature proved, if it carried one; always null on a plain listener. */
  tlsPeer: TlsPeer | null;
  /** A plain-HTTP listener (`--insecure-http`): peers use per-node credentials. */
  insecure: boolean;
}

/** Routes a request (with what the listener learned) to the application. */
export type FetchHandler = (
  request: Request,
  env: ServerBindings,
) => Response | Promise<Response>;

/** The node's listener, whichever implementation serves it. */
export interface ApiServer {
  readonly port: number;
  readonly insecure: boolean;
  /** Resolves when the server has closed. */
  readonly finished: Promise<void>;
  /** Presents the node's certificate; accepts peer requests signed for `selfUrl`. */
  useTls(tls: NodeTls, selfUrl: string): Promise<void>;
  /** Routes requests to `handler` from now on. */
  serveWith(handler: FetchHandler): void;
  /** Stops accepting, closes the server. */
  shutdown(): Promise<void>;
}

/** Binds the node's listener (see the module doc). */
export const ApiServer = {
  listen(opts: {
    hostname: string;
    port: number;
    insecure: boolean;
    tls?: NodeTls | null;
    limits?: ConnectionLimits;
  }): Promise<ApiServer> {
    return DenoApiServer.listen(opts);
  },
};

/** The API served by `Deno.serve` behind the connection guard (module doc). */
export class DenoApiServer implements ApiServer {
  readonly #insecure: boolean;
  readonly #guard: ConnectionGuard;
  #server!: Deno.HttpServer<Deno.NetAddr>;
  #certPem: string | null = null;
  #verifier: SignatureVerifier | null = null;
  /** Published at NODE_CERT_PATH once the node has its own (peers derive MAC keys from it). */
  #ownCert: string | null = null;
  #handler: FetchHandler = () =>
    Response.json({ error: { code: "unavailable", message: "node is starting" } }, {
      status: 503,
    });
  #closed = false;
  #done!: () => void;
  /** Resolves when the server has closed. */
  readonly finished: Promise<void>;

  private constructor(guard: ConnectionGuard, insecure: boolean) {
    this.#guard = guard;
    this.#insecure = insecure;
    this.finished = new Promise((resolve) => this.#done = resolve);
  }

  /**
   * Binds the port now (so `HOST:0` gets a kernel-chosen port); TLS material can
   * follow with {@link useTls} — until then the listener presents a throwaway
   * certificate and answers 503.
   */
  static async listen(opts: {
    hostname: string;
    port: number;
    insecure: boolean;
    tls?: NodeTls | null;
    limits?: ConnectionLimits;
  }): Promise<DenoApiServer> {
    const guard = ConnectionGuard.listen(opts);
    const api = new DenoApiServer(guard, opts.insecure);
    const cert = opts.insecure
      ? null
      : opts.tls
      ? { cert: opts.tls.certPem, key: opts.tls.keyPem }
      : await throwawayCert();
    api.#start(cert);
    return api;
  }

  #start(cert: { cert: string; key: string } | null): void {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {}, ...(cert ?? {}) },
      (req, info) => this.#dispatch(req, info),
    );
    this.#guard.forwardTo(this.#server.addr.port);
    this.#certPem = cert?.cert ?? null;
  }

  get port(): number {
    return this.#guard.port;
  }

  get insecure(): boolean {
    return this.#insecure;
  }

  /**
   * Presents the node's certificate and accepts peer requests signed for
   * `selfUrl` (the node's advertised URL) by members' certificates.
   * `Deno.serve` cannot change its certificate, so a server still presenting
   * the throwaway one is replaced: new connections reach the new one.
   */
  async useTls(tls: NodeTls, selfUrl: string): Promise<void> {
    if (this.#insecure) return;
    this.#verifier = new SignatureVerifier(tls, selfUrl);
    this.#ownCert = tls.certPem;
    if (this.#certPem === tls.certPem) return;
    const old = this.#server;
    this.#start({ cert: tls.certPem, key: tls.keyPem });
    await shutdownWithin(old, 2_000);
  }

  /** Routes requests to `handler` from now on. */
  serveWith(handler: FetchHandler): void {
    this.#handler = handler;
  }

  /** Stops accepting and closes the server (waiting at most 2 s for requests in flight). */
  async shutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#guard.close();
    await shutdownWithin(this.#server, 2_000);
    this.#done();
  }

  #dispatch(req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Response | Promise<Response> {
    const conn = this.#guard.connectionFrom(info.remoteAddr.port);
    if (!conn) return notThroughTheGuard();
    this.#guard.requestStarted(conn);
    info.completed.then(
      () => this.#guard.requestEnded(conn),
      () => this.#guard.requestEnded(conn),
    );
    return this.#route(req, conn);
  }

  #route(req: Request, conn: GuardedConnection): Response | Promise<Response> {
    const remoteAddr = conn.remote.hostname;
    if (this.#ownCert && req.method === "GET" && req.url.endsWith(NODE_CERT_PATH)) {
      return new Response(this.#ownCert, { headers: { "content-type": "application/x-pem-file" } });
    }
    const signature = req.headers.get(PEER_SIGNATURE_HEADER);
    if (this.#insecure || !this.#verifier || signature === null) {
      return this.#handler(req, { remoteAddr, tlsPeer: null, insecure: this.#insecure });
    }
    const known = provenPeers.get(conn);
    const cert = req.headers.get(PEER_CERT_HEADER);
    if (known && known.cert === cert && signature.startsWith(known.prefix)) {
      return this.#handler(req, { remoteAddr, tlsPeer: known.proof, insecure: false });
    }
    return this.#verifier.verify(req).then((v) => {
      if (v?.proof.authorized && cert) {
        provenPeers.set(conn, { cert, prefix: `${v.proof.commonName} `, proof: v.proof });
      }
      return this.#handler(v?.request ?? req, {
        remoteAddr,
        tlsPeer: v?.proof ?? null,
        insecure: false,
      });
    });
  }
}

/**
 * The peer each connection proved to be, by the first signed request on it that
 * verified. A connection is TLS from the peer's own HTTP client to this server, so
 * no one else can send on it: later requests on it that carry the same certificate
 * and name are that peer's without checking their MAC and body hash again — what
 * mutual TLS gives, an identity per connection. It halved the cost of TLS plus
 * authentication on a replicated write (1 client: +1.89 → +0.99 ms at p50).
 * Membership and revocation are still decided per request (api/auth.ts) from the
 * proof's fingerprint. A request naming anyone else is verified in full.
 */
const provenPeers = new WeakMap<
  GuardedConnection,
  { cert: string; prefix: string; proof: TlsPeer }
>();

/**
 * A connection straight to the loopback server, around the guard (another local
 * process): it would escape the connection limits and show no client address.
 */
function notThroughTheGuard(): Response {
  return Response.json({
    error: { code: "forbidden", message: "connect to the node's --listen address" },
  }, { status: 403, headers: { connection: "close" } });
}

async function shutdownWithin(server: Deno.HttpServer, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([server.shutdown(), new Promise((r) => timer = setTimeout(r, ms))]);
  clearTimeout(timer);
}

/** A self-signed certificate served only until the node's own is ready (bootstrap, join). */
async function throwawayCert(): Promise<{ cert: string; key: string }> {
  const ca = await createCa("starting");
  return { cert: ca.certPem, key: ca.keyPem };
}
