/**
 * The node's one listener (`--listen`): HTTPS with the node's certificate by
 * default, or plain HTTP with `--insecure-http` (loopback only). Two
 * implementations ({@link ApiServer.listen}): api/node_server.ts (node:https, the
 * default) and {@link DenoApiServer}, served by `Deno.serve`. Clients and peers share it. `Deno.serve` cannot ask for client
 * certificates, so peers authenticate each request with a signature made with
 * their node key (core/peer/signature.ts, "TLS plus signed requests" in issue 9);
 * the signature is checked here, before routing, and what it proves is handed to
 * the application as `tlsPeer` (api/auth.ts decides membership from it). On a
 * plain listener peers send their per-node credential instead.
 *
 * `node:https` with `requestCert` (mutual TLS) served this before; its HTTP layer
 * cost ~0.2 ms per request and more than 1 ms per replicated write (BENCHMARKS.md).
 *
 * KNOWN GAP: `Deno.serve` (Deno 2.9.6) exposes no connection hooks and enforces no
 * header timeout, idle timeout or connection cap: a slowloris connection sending a
 * header line a second, and an idle keep-alive connection, both stayed open past 70 s
 * (measured). The node:https listener enforced all three (NOVACTL_HEADERS_TIMEOUT_MS,
 * NOVACTL_IDLE_TIMEOUT_MS, NOVACTL_MAX_CONNECTIONS); tests/trust_test.ts's slowloris
 * step fails with NOVACTL_LISTENER=deno. Body limits still hold (413 early, flat memory
 * on a 200 MB join).
 */
import {
  NODE_CERT_PATH,
  PEER_SIGNATURE_HEADER,
  type PeerProof,
  SignatureVerifier,
} from "../core/peer/signature.ts";
import { createCa, type NodeTls } from "../core/pki/mod.ts";
import { type ConnectionLimits, NodeApiServer } from "./node_server.ts";

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

/** Which listener serves the API: env NOVACTL_LISTENER=deno|node (default node, see below). */
export function listenerKind(): "deno" | "node" {
  return Deno.env.get("NOVACTL_LISTENER") === "deno" ? "deno" : "node";
}

/**
 * Binds the node's listener. `node` (the default) is api/node_server.ts: node:https,
 * with header/idle timeouts and a connection cap. `deno` is {@link DenoApiServer}:
 * faster (BENCHMARKS.md) but without any connection limit (see KNOWN GAP above).
 */
export const ApiServer = {
  async listen(opts: {
    hostname: string;
    port: number;
    insecure: boolean;
    tls?: NodeTls | null;
    kind?: "deno" | "node";
    limits?: ConnectionLimits;
  }): Promise<ApiServer> {
    return (opts.kind ?? listenerKind()) === "deno"
      ? await DenoApiServer.listen(opts)
      : await NodeApiServer.listen(opts);
  },
};

/** The API served by `Deno.serve` (module doc). */
export class DenoApiServer implements ApiServer {
  readonly #hostname: string;
  readonly #insecure: boolean;
  #server!: Deno.HttpServer<Deno.NetAddr>;
  #certPem: string | null = null;
  #verifier: SignatureVerifier | null = null;
  /** Published at NODE_CERT_PATH once the node has its own (peers derive MAC keys from it). */
  #ownCert: string | null = null;
  #handler: FetchHandler = () =>
    Response.json({ error: { code: "unavailable", message: "node is starting" } }, {
      status: 503,
    });
  #port = 0;
  #closed = false;
  #done!: () => void;
  /** Resolves when the server has closed. */
  readonly finished: Promise<void>;

  private constructor(hostname: string, insecure: boolean) {
    this.#hostname = hostname;
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
  }): Promise<DenoApiServer> {
    const api = new DenoApiServer(opts.hostname, opts.insecure);
    const cert = opts.insecure
      ? null
      : opts.tls
      ? { cert: opts.tls.certPem, key: opts.tls.keyPem }
      : await throwawayCert();
    api.#start(opts.port, cert);
    return api;
  }

  #start(port: number, cert: { cert: string; key: string } | null): void {
    this.#server = Deno.serve(
      { hostname: this.#hostname, port, onListen() {}, ...(cert ?? {}) },
      (req, info) => this.#dispatch(req, info),
    );
    this.#port = this.#server.addr.port;
    this.#certPem = cert?.cert ?? null;
  }

  get port(): number {
    return this.#port;
  }

  get insecure(): boolean {
    return this.#insecure;
  }

  /**
   * Presents the node's certificate and accepts peer requests signed for
   * `selfUrl` (the node's advertised URL) by members' certificates.
   * `Deno.serve` cannot change its certificate, so a listener still presenting
   * the throwaway one is served anew on the same port.
   */
  async useTls(tls: NodeTls, selfUrl: string): Promise<void> {
    if (this.#insecure) return;
    this.#verifier = new SignatureVerifier(tls, selfUrl);
    this.#ownCert = tls.certPem;
    if (this.#certPem === tls.certPem) return;
    await this.#server.shutdown();
    this.#start(this.#port, { cert: tls.certPem, key: tls.keyPem });
  }

  /** Routes requests to `handler` from now on. */
  serveWith(handler: FetchHandler): void {
    this.#handler = handler;
  }

  /** Stops accepting and closes the server (waiting at most 2 s for requests in flight). */
  async shutdown(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#server.shutdown(),
      new Promise((r) => timer = setTimeout(r, 2_000)),
    ]);
    clearTimeout(timer);
    this.#done();
  }

  #dispatch(req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Response | Promise<Response> {
    const remoteAddr = info.remoteAddr.hostname;
    if (this.#ownCert && req.method === "GET" && req.url.endsWith(NODE_CERT_PATH)) {
      return new Response(this.#ownCert, { headers: { "content-type": "application/x-pem-file" } });
    }
    if (this.#insecure || !this.#verifier || !req.headers.has(PEER_SIGNATURE_HEADER)) {
      return this.#handler(req, { remoteAddr, tlsPeer: null, insecure: this.#insecure });
    }
    return this.#verifier.verify(req).then((v) =>
      this.#handler(v?.request ?? req, {
        remoteAddr,
        tlsPeer: v?.proof ?? null,
        insecure: false,
      })
    );
  }
}

/** A self-signed certificate served only until the node's own is ready (bootstrap, join). */
async function throwawayCert(): Promise<{ cert: string; key: string }> {
  const ca = await createCa("starting");
  return { cert: ca.certPem, key: ca.keyPem };
}
