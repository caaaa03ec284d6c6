/**
 * Trusting test clusters' CAs from the test/bench process. Nodes serve HTTPS
 * with their cluster's CA (DIR/ca.crt); NovactlCluster registers each cluster's
 * CA here once it bootstraps, and the helpers that talk to nodes (`clusterFetch`,
 * `requestJson`, tests/support/api.ts `api`/`cli`) use it. The one client trusts
 * every CA registered in this process, so tests with two clusters work too.
 */

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

const nodeClients = new Map<string, Deno.HttpClient>();

/**
 * A client presenting a node's own certificate (its DATA_DIR/tls files), for tests
 * that speak on a node's behalf: fault injection (/internal/faults), or what a removed
 * or misbehaving member could send.
 */
export function nodeHttpClient(dataDir: string): Deno.HttpClient {
  let c = nodeClients.get(dataDir);
  if (!c) {
    const read = (f: string) => Deno.readTextFileSync(`${dataDir}/${f}`);
    c = Deno.createHttpClient({
      caCerts: [read("ca.crt")],
      cert: read("tls/node.crt"),
      key: read("tls/node.key"),
    });
    nodeClients.set(dataDir, c);
  }
  return c;
}

/** `fetch` as the node whose data dir is `dataDir` (see {@link nodeHttpClient}). */
export function fetchAsNode(
  dataDir: string,
  url: string | URL,
  init: RequestInit = {},
): Promise<Response> {
  if (String(url).startsWith("http:")) {
    // Plain-HTTP clusters (--insecure-http): the node's own credential stands in.
    const id = JSON.parse(Deno.readTextFileSync(`${dataDir}/node.json`));
    const headers = new Headers(init.headers);
    headers.set("x-novactl-peer-credential", `${id.name}:${id.peerCredential}`);
    return fetch(url, { ...init, headers });
  }
  return fetch(url, { ...init, client: nodeHttpClient(dataDir) });
}

/** PEMs of every registered cluster CA, for callers that build their own client. */
export function clusterCaPems(): string[] {
  return [...cas.values()];
}
