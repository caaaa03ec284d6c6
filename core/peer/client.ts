/**
 * The one HTTP client a node uses for every request to a peer (Raft, leases,
 * proposals, images, migrations, forwarded user requests). Over https it
 * trusts only the cluster CA and signs every request with the node's own key
 * (./signature.ts); over plain http (loopback development with --insecure-http)
 * it sends the node's own credential instead, never a secret shared by the cluster.
 */
import type { NodeTls } from "../pki/mod.ts";
import { NODE_CERT_PATH, RequestSigner } from "./signature.ts";

/** `NAME:CREDENTIAL` of the sending node, on plain-HTTP peer requests only. */
export const PEER_CREDENTIAL_HEADER = "x-novactl-peer-credential";

/** `fetch` bound to a node's peer identity. */
export type PeerFetch = (url: string, init?: RequestInit) => Promise<Response>;

export class PeerHttp {
  readonly #client: Deno.HttpClient | null;
  readonly #signer: RequestSigner | null;
  readonly #credentialHeader: string;

  /**
   * @param tls the node's certificate, key and cluster CA (null: plain HTTP only, tests)
   * @param self the node's name and its own peer credential
   */
  constructor(tls: NodeTls | null, self: { name: string; credential: string }) {
    // HTTP/1.1: Deno.serve offers h2 too, but one h2 connection per peer measured slower
    // per request (0.13 against 0.06 ms on loopback); the pool keeps one TLS connection
    // per concurrent request instead. NOVACTL_PEER_HTTP2=1 allows h2 (for measuring).
    this.#client = tls
      ? Deno.createHttpClient({
        caCerts: [tls.caPem],
        http2: Deno.env.get("NOVACTL_PEER_HTTP2") === "1",
      })
      : null;
    const client = this.#client;
    this.#signer = tls && client
      ? new RequestSigner(self.name, tls, async (origin) => {
        const res = await fetch(origin + NODE_CERT_PATH, {
          client,
          signal: AbortSignal.timeout(10_000),
        });
        if (!res.ok) throw new Error(`${origin}${NODE_CERT_PATH}: HTTP ${res.status}`);
        return await res.text();
      })
      : null;
    this.#credentialHeader = `${self.name}:${self.credential}`;
  }

  /** fetch with this node's identity: a signed request, or the credential header. */
  readonly fetch: PeerFetch = async (url, init = {}) => {
    if (url.startsWith("https:")) {
      if (!this.#client || !this.#signer) throw new Error("no TLS identity for an https peer");
      const headers = new Headers(init.headers);
      const signed = await this.#signer.headers(init.method ?? "GET", url, init.body);
      for (const k in signed) headers.set(k, signed[k]);
      const res = await fetch(url, { ...init, headers, client: this.#client });
      // The receiver may have a new certificate (rejoined): derive the pair key anew next time.
      if (res.status === 403) this.#signer.forget(new URL(url).origin);
      return res;
    }
    const headers = new Headers(init.headers);
    headers.set(PEER_CREDENTIAL_HEADER, this.#credentialHeader);
    return fetch(url, { ...init, headers });
  };

  /**
   * Opens a WebSocket to a peer with this node's identity, as {@link fetch} sends a request:
   * the handshake is signed (or carries the credential), and over TLS only the cluster CA is
   * trusted. `url` is the peer's http(s) URL; the socket may still fail to open (its `error`
   * and `close` events say so).
   */
  async webSocket(
    url: string,
    init: { headers?: HeadersInit; protocols?: string[] } = {},
  ): Promise<WebSocket> {
    const headers = new Headers(init.headers);
    const wsUrl = url.replace(/^http/, "ws");
    if (url.startsWith("https:")) {
      if (!this.#client || !this.#signer) throw new Error("no TLS identity for an https peer");
      // Signed as the GET it is: the receiver rebuilds the string from its own https origin.
      const signed = await this.#signer.headers("GET", url, undefined);
      for (const k in signed) headers.set(k, signed[k]);
      return new WebSocket(wsUrl, { headers, protocols: init.protocols, client: this.#client });
    }
    headers.set(PEER_CREDENTIAL_HEADER, this.#credentialHeader);
    return new WebSocket(wsUrl, { headers, protocols: init.protocols });
  }

  close(): void {
    this.#client?.close();
  }
}

/** Splits a credential header into name and secret (null if malformed). */
export function parsePeerCredential(header: string): { name: string; secret: string } | null {
  const i = header.indexOf(":");
  if (i <= 0 || i === header.length - 1) return null;
  return { name: header.slice(0, i), secret: header.slice(i + 1) };
}
