/**
 * Trusting test clusters' CAs from the test/bench process. Nodes serve HTTPS
 * with their cluster's CA (DIR/ca.crt); NovactlCluster registers each cluster's
 * CA here once it bootstraps, and the helpers that talk to nodes (`clusterFetch`,
 * `requestJson`, tests/support/api.ts `api`/`cli`) use it. The one client trusts
 * every CA registered in this process, so tests with two clusters work too.
 */
import { NODE_CERT_PATH, RequestSigner } from "../../core/peer/signature.ts";

const cas = new Map<string, string>();
let client: Deno.HttpClient | undefined;
let lastCaFile: string | undefined;

/** Trusts the CA in `caFile` (PEM) for every later `clusterFetch` in this process. */
export function trustClusterCa(caFile: string): void {
  const pem = Deno.readTextFileSync(caFile);
  lastCaFile = caFile;
  if (cas.get(caFile) === pem) return;
  cas.set(caFile, pem);
  client?.close();
  client = Deno.createHttpClient({ caCerts: [...cas.values()] });
}

/** The client trusting every registered cluster CA (undefined before any). */
export function clusterHttpClient(): Deno.HttpClient | undefined {
  return client;
}

/** The most recently registered CA file: what CLI runs get as NOVACTL_CA. */
export function clusterCaFile(): string | undefined {
  return lastCaFile;
}

/** `fetch` that trusts the registered cluster CAs (plain http URLs pass through). */
export function clusterFetch(url: string | URL, init: RequestInit = {}): Promise<Response> {
  return fetch(url, client ? { ...init, client } : init);
}

const nodeSigners = new Map<string, RequestSigner>();

/** A node's published certificate (what a signer derives the pair key from). */
export async function nodeCertAt(origin: string): Promise<string> {
  const res = await clusterFetch(origin + NODE_CERT_PATH);
  if (!res.ok) throw new Error(`${origin}${NODE_CERT_PATH}: HTTP ${res.status}`);
  return await res.text();
}

/**
 * `fetch` signed with a certificate's key (core/peer/signature.ts), trusting the
 * registered cluster CAs: what a node (or an impostor holding `certPem`/`keyPem`)
 * sends to a peer.
 */
export async function fetchSignedWith(
  signer: RequestSigner,
  url: string | URL,
  init: RequestInit = {},
): Promise<Response> {
  const headers = new Headers(init.headers);
  const signed = await signer.headers(init.method ?? "GET", String(url), init.body);
  for (const k in signed) headers.set(k, signed[k]);
  return await clusterFetch(url, { ...init, headers });
}

/**
 * `fetch` as the node whose data dir is `dataDir`, for tests that speak on a node's
 * behalf: fault injection (/internal/faults), or what a removed or misbehaving member
 * could send. Signed with its key (DATA_DIR/tls), or its credential on plain HTTP.
 */
export function fetchAsNode(
  dataDir: string,
  url: string | URL,
  init: RequestInit = {},
): Promise<Response> {
  const id = JSON.parse(Deno.readTextFileSync(`${dataDir}/node.json`));
  if (String(url).startsWith("http:")) {
    // Plain-HTTP clusters (--insecure-http): the node's own credential stands in.
    const headers = new Headers(init.headers);
    headers.set("x-novactl-peer-credential", `${id.name}:${id.peerCredential}`);
    return fetch(url, { ...init, headers });
  }
  let signer = nodeSigners.get(dataDir);
  if (!signer) {
    const read = (f: string) => Deno.readTextFileSync(`${dataDir}/${f}`);
    signer = new RequestSigner(
      id.name,
      { certPem: read("tls/node.crt"), keyPem: read("tls/node.key"), caPem: read("ca.crt") },
      nodeCertAt,
    );
    nodeSigners.set(dataDir, signer);
  }
  return fetchSignedWith(signer, url, init);
}

/** PEMs of every registered cluster CA, for callers that build their own client. */
export function clusterCaPems(): string[] {
  return [...cas.values()];
}
