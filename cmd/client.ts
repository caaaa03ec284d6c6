/** The CLI's HTTP client of the REST API. Server errors become NovaErrors with the server's code. */
import { codeOfHttpStatus, type ErrorCode, NovaError } from "../core/errors/mod.ts";

export interface ClientOptions {
  server: string;
  token?: string;
  /** PEM file of the cluster CA; without it https servers are checked against system roots. */
  ca?: string;
}

export class ApiClient {
  #client: Deno.HttpClient | undefined;

  constructor(readonly opts: ClientOptions) {}

  /** A client trusting the cluster CA (read once), or undefined for system roots. */
  private httpClient(): Deno.HttpClient | undefined {
    if (!this.opts.ca || this.#client) return this.#client;
    let pem: string;
    try {
      pem = Deno.readTextFileSync(this.opts.ca);
    } catch (err) {
      throw new NovaError(
        "validation",
        `cannot read --ca ${this.opts.ca}: ${(err as Error).message}`,
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

  /** A successful response whose body the caller reads (console text, streams). */
  async stream(path: string): Promise<Response> {
    return await this.send(path, { method: "GET", headers: this.authHeaders() });
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  private authHeaders(): Record<string, string> {
    return this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {};
  }

  private async send(path: string, init: RequestInit): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(this.opts.server.replace(/\/$/, "") + path, {
        ...init,
        client: this.httpClient(),
      });
    } catch (err) {
      if (err instanceof NovaError) throw err;
      const cause = (err as Error).cause;
      const message = (err as Error).message +
        (cause instanceof Error ? `: ${cause.message}` : cause ? `: ${String(cause)}` : "");
      if (this.opts.server.startsWith("https:") && /certificate|UnknownIssuer|tls/i.test(message)) {
        throw new NovaError(
          "unavailable",
          this.opts.ca
            ? `${this.opts.server} presented a certificate ${this.opts.ca} does not verify: ${message}`
            : `cannot verify ${this.opts.server}'s certificate: pass --ca DIR/ca.crt (or set NOVACTL_CA) with the cluster CA from a node's data dir`,
        );
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
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { raw: text };
  }
}
