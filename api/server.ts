/**
 * The node's one listener (`--listen`): HTTPS with the node's certificate by
 * default, or plain HTTP with `--insecure-http` (loopback only). Clients and
 * peers share it.
 *
 * The port belongs to a {@link ConnectionGuard} (api/connection_guard.ts), which
 * terminates TLS and enforces the header timeout, idle timeout and connection cap;
 * it splices each connection's plaintext to `Deno.serve` on a loopback port and
 * hears from here when each request starts and ends. Why not one server alone
 * (measured on Deno 2.9.6; details in the guard's doc): `Deno.serve` enforces no
 * connection limits and over TLS holds answers above ~800 bytes for 44 ms;
 * `node:https` leaves keep-alive requests unanswered (5 of 40 after a 14 MB
 * answer, 2 of 2,000 small ones).
 *
 * Peers authenticate each request with a signature made with their node key
 * (core/peer/signature.ts, "TLS plus signed requests" in issue 9), checked here
 * before routing; what it proves is handed to the application as `tlsPeer`
 * (api/auth.ts decides membership from it). A connection keeps the peer its
 * first verified request proved (see `provenPeers`). On a plain listener peers
 * send their per-node credential instead.
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
  /**
   * The API a request came through when not REST, for its audit record (`grpc
   * novactl.v1.VmService/StartVm`): set in-process by api/grpc/, never from a client's header.
   */
  via?: string;
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
    const certificate = opts.insecure
      ? null
      : opts.tls
      ? { cert: opts.tls.certPem, key: opts.tls.keyPem }
      : await throwawayCert();
    const guard = await ConnectionGuard.listen({ ...opts, certificate });
    const api = new DenoApiServer(guard, opts.insecure);
    api.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req, info) => api.#dispatch(req, info),
    );
    guard.forwardTo(api.#server.addr.port);
    return api;
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
   */
  async useTls(tls: NodeTls, selfUrl: string): Promise<void> {
    if (this.#insecure) return;
    this.#verifier = new SignatureVerifier(tls, selfUrl);
    this.#ownCert = tls.certPem;
    await this.#guard.useCertificate({ cert: tls.certPem, key: tls.keyPem });
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
    const ended = () => this.#guard.requestEnded(conn);
    info.completed.then(ended, ended);
    // A body that may still be on its way (a small one came with the headers).
    const longBody = req.headers.has("transfer-encoding") ||
      Number(req.headers.get("content-length") ?? 0) > LONG_BODY_BYTES;
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return Promise.resolve(this.#route(req, conn)).then((res) => {
        if (res.status === 101) this.#guard.upgraded(conn);
        return res;
      });
    }
    if (!longBody) return this.#route(req, conn);
    // Answered without touching the body (a 401, a 413): the client may still be sending it,
    // and the server would read (and drop) all of it, however long, before closing.
    return Promise.resolve(this.#route(req, conn)).then((res) => {
      if (bodyWasRead(req)) return res;
      this.#guard.answeredEarly(conn);
      return closingAfter(res);
    });
  }

  #route(req: Request, conn: GuardedConnection): Response | Promise<Response> {
    const remoteAddr = conn.remoteHost;
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

/** Bodies above this may still be arriving when an early answer goes out. */
const LONG_BODY_BYTES = 64 << 10;

/** `res` marked as the last answer on its connection (its request's unread body is in the way). */
function closingAfter(res: Response): Response {
  try {
    res.headers.set("connection", "close");
    return res;
  } catch {
    // Immutable headers (a response fetched from another node): copy them.
    const headers = new Headers(res.headers);
    headers.set("connection", "close");
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
  }
}

function bodyWasRead(req: Request): boolean {
  try {
    return req.bodyUsed;
  } catch {
    return true; // the request is gone with its connection
  }
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
