/** The CLI's HTTP client of the REST API. Server errors become NovaErrors with the server's code. */
import { codeOfHttpStatus, type ErrorCode, NovaError } from "../core/errors/mod.ts";

export interface ClientOptions {
  server: string;
  token?: string;
}

export class ApiClient {
  constructor(readonly opts: ClientOptions) {}

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
      res = await fetch(this.opts.server.replace(/\/$/, "") + path, init);
    } catch (err) {
      throw new NovaError(
        "unavailable",
        `cannot reach ${this.opts.server}: ${(err as Error).message}`,
      );
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
