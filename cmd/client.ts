/** The CLI's HTTP client of the REST API. Server errors become NovaErrors with the server's code. */
import { codeOfHttpStatus, type ErrorCode, NovaError } from "../core/errors/mod.ts";
import { resolveCa, type ResolvedCa, type TrustDeps } from "./trust.ts";

/** Items a list asks for per page (the server allows up to 1000). */
export const LIST_PAGE = 500;

export interface ClientOptions {
  server: string;
  token?: string;
  /** PEM file of the cluster CA; without it the CA pinned for the server (see trust.ts). */
  ca?: string;
  /** SHA-256 the server's CA must have to be pinned on first use (`--ca-fingerprint`). */
  caFingerprint?: string;
  /**
   * How to find or pin the CA for https servers without `ca`; without it, https servers are
   * checked against system roots only.
   */
  trust?: TrustDeps;
}

export class ApiClient {
  #client: Deno.HttpClient | undefined;
  #ca: ResolvedCa | undefined;
  #resolved = false;

  constructor(readonly opts: ClientOptions) {}

  /** A client trusting the cluster CA (resolved and read once), or undefined for system roots. */
  private async httpClient(): Promise<Deno.HttpClient | undefined> {
    if (this.#resolved) return this.#client;
    this.#ca = this.opts.trust
      ? await resolveCa(this.opts, this.opts.trust)
      : this.opts.ca
      ? { file: this.opts.ca, source: "flag" }
      : undefined;
    this.#resolved = true;
    if (!this.#ca) return undefined;
    let pem: string;
    try {
      pem = Deno.readTextFileSync(this.#ca.file);
    } catch (err) {
      throw new NovaError(
        "validation",
        `cannot read --ca ${this.#ca.file}: ${(err as Error).message}`,
      );
    }
    this.#client = Deno.createHttpClient({ caCerts: [pem] });
    return this.#client;
  }

  async request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<T> {
    const h = { ...this.authHeaders(), ...headers };
    if (body !== undefined) h["content-type"] = "application/json";
    const res = await this.send(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return (text ? safeJson(text) : null) as T;
  }

  /** As {@link request}, with the success status (202: a `?wait` call still on its way). */
  async requestWithStatus<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }> {
    const h = this.authHeaders();
    if (body !== undefined) h["content-type"] = "application/json";
    const res = await this.send(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? safeJson(text) : null) as T };
  }

  /** Streams a local file as the request body (image uploads). */
  async upload<T = unknown>(path: string, file: string): Promise<T> {
    const f = await Deno.open(file, { read: true });
    const res = await this.send(path, {
      method: "PUT",
      headers: { ...this.authHeaders(), "content-type": "application/octet-stream" },
      body: f.readable,
    });
    return safeJson(await res.text()) as T;
  }

  /** A successful response whose body the caller reads (console text, streams, backups). */
  async stream(path: string, method = "GET"): Promise<Response> {
    return await this.send(path, { method, headers: this.authHeaders() });
  }

  /**
   * A WebSocket to `path` with the token in its handshake's Authorization header, trusting the
   * same CA as requests. Whether it opens shows in its events.
   */
  async webSocket(path: string): Promise<WebSocket> {
    const client = await this.httpClient();
    const url = this.opts.server.replace(/\/$/, "").replace(/^http/, "ws") + path;
    return new WebSocket(url, { headers: this.authHeaders(), ...(client ? { client } : {}) });
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  /**
   * A whole list: `GET path` (filters in its query) page by page, following each page's
   * `continue`, answered as `{ [key]: items }`; with `max`, at most that many items.
   * Why: every list answers in pages (api/pagination.ts), and scripts need complete lists.
   */
  async list<K extends string, T = Record<string, unknown>>(
    path: string,
    key: K,
    max = Infinity,
  ): Promise<{ [k in K]: T[] }> {
    const [base, search = ""] = path.split("?", 2);
    const query = new URLSearchParams(search);
    const items: T[] = [];
    for (;;) {
      query.set("limit", String(Math.min(max - items.length, LIST_PAGE)));
      const page = await this.get<Record<string, unknown>>(`${base}?${query}`);
      const got = page?.[key];
      if (!Array.isArray(got)) {
        throw new NovaError("internal", `GET ${base}: the answer has no "${key}" list`);
      }
      items.push(...(got as T[]).slice(0, max - items.length));
      if (typeof page.continue !== "string" || items.length >= max) break;
      query.set("continue", page.continue);
    }
    return { [key]: items } as { [k in K]: T[] };
  }

  private authHeaders(): Record<string, string> {
    return this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {};
  }

  private async send(path: string, init: RequestInit): Promise<Response> {
    const client = await this.httpClient();
    let res: Response;
    try {
      res = await fetch(this.opts.server.replace(/\/$/, "") + path, { ...init, client });
    } catch (err) {
      if (err instanceof NovaError) throw err;
      const cause = (err as Error).cause;
      const message = (err as Error).message +
        (cause instanceof Error ? `: ${cause.message}` : cause ? `: ${String(cause)}` : "");
      if (this.opts.server.startsWith("https:") && /certificate|UnknownIssuer|tls/i.test(message)) {
        throw new NovaError("unavailable", this.certificateProblem(message));
      }
      throw new NovaError("unavailable", `cannot reach ${this.opts.server}: ${message}`);
    }
    if (res.ok) return res;
    const data = safeJson(await res.text());
    const e = (data as { error?: { code?: ErrorCode; message?: string; details?: unknown } })
      ?.error;
    throw new NovaError(
      e?.code ?? codeOfHttpStatus(res.status),
      e?.message ?? `HTTP ${res.status}`,
      e?.details,
    );
  }

  /** Why an https server's certificate was refused, naming the CA file that refused it. */
  private certificateProblem(message: string): string {
    const server = this.opts.server;
    if (this.#ca?.source === "pinned") {
      return `${server} presented a certificate the cluster CA pinned in ${this.#ca.file} does not ` +
        `verify: another cluster at this address, or someone in between; if the cluster was ` +
        `re-created, remove ${this.#ca.file} and pin the new CA (novactl remote trust): ${message}`;
    }
    if (this.#ca) {
      return `${server} presented a certificate ${this.#ca.file} does not verify: ${message}`;
    }
    return `cannot verify ${server}'s certificate: pass --ca DIR/ca.crt (or set NOVACTL_CA) with ` +
      `the cluster CA from a node's data dir`;
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { raw: text };
  }
}
