/**
 * The one HTTP client a node uses for every request to a peer (Raft, leases,
 * proposals, images, migrations, forwarded user requests). Over https it
 * presents the node's certificate and trusts only the cluster CA; over plain
 * http (loopback development with --insecure-http) it sends the node's own
 * credential instead, never a secret shared by the cluster.
 */
import type { NodeTls } from "../pki/mod.ts";

/** `NAME:CREDENTIAL` of the sending node, on plain-HTTP peer requests only. */
export const PEER_CREDENTIAL_HEADER = "x-novactl-peer-credential";

/** `fetch` bound to a node's peer identity. */
export type PeerFetch = (url: string, init?: RequestInit) => Promise<Response>;

export class PeerHttp {
  readonly #client: Deno.HttpClient | null;
  readonly #credentialHeader: string;

  /**
   * @param tls the node's certificate, key and cluster CA (null: plain HTTP only, tests)
   * @param self the node's name and its own peer credential
   */
  constructor(tls: NodeTls | null, self: { name: string; credential: string }) {
    this.#client = tls
      ? Deno.createHttpClient({ caCerts: [tls.caPem], cert: tls.certPem, key: tls.keyPem })
      : null;
    this.#credentialHeader = `${self.name}:${self.credential}`;
  }

  /** The TLS client, for callers that build their own fetch (e.g. host/migrator.ts). */
  get client(): Deno.HttpClient | undefined {
    return this.#client ?? undefined;
  }

  /** Headers to add to a plain-HTTP peer request (none over https). */
  headersFor(url: string): Record<string, string> {
    return url.startsWith("https:") ? {} : { [PEER_CREDENTIAL_HEADER]: this.#credentialHeader };
  }

  /** fetch with this node's identity: the client certificate, or the credential header. */
  readonly fetch: PeerFetch = (url, init = {}) => {
    if (url.startsWith("https:")) {
      if (!this.#client) return Promise.reject(new Error("no TLS identity for an https peer"));
      return fetch(url, { ...init, client: this.#client });
    }
    const headers = new Headers(init.headers);
    headers.set(PEER_CREDENTIAL_HEADER, this.#credentialHeader);
    return fetch(url, { ...init, headers });
  };

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
