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
    const h: Record<string, string> = { ...headers };
    if (this.opts.token) h.authorization = `Bearer ${this.opts.token}`;
    if (body !== undefined) h["content-type"] = "application/json";
    const url = this.opts.server.replace(/\/$/, "") + path;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new NovaError(
        "unavailable",
        `cannot reach ${this.opts.server}: ${(err as Error).message}`,
      );
    }
    const text = await res.text();
    const data = text ? safeJson(text) : null;
    if (!res.ok) {
      const e = (data as { error?: { code?: ErrorCode; message?: string; details?: unknown } })
        ?.error;
      throw new NovaError(
        e?.code ?? codeOfHttpStatus(res.status),
        e?.message ?? `HTTP ${res.status}`,
        e?.details,
      );
    }
    return data as T;
  }

  /** Streams a local file as the request body (image uploads). */
  async upload<T = unknown>(path: string, file: string): Promise<T> {
    const f = await Deno.open(file, { read: true });
    const h: Record<string, string> = { "content-type": "application/octet-stream" };
    if (this.opts.token) h.authorization = `Bearer ${this.opts.token}`;
    let res: Response;
    try {
      res = await fetch(this.opts.server.replace(/\/$/, "") + path, {
        method: "PUT",
        headers: h,
        body: f.readable,
      });
    } catch (err) {
      throw new NovaError(
        "unavailable",
        `cannot reach ${this.opts.server}: ${(err as Error).message}`,
      );
    }
    const data = safeJson(await res.text());
    if (!res.ok) {
      const e = (data as { error?: { code?: ErrorCode; message?: string; details?: unknown } })
        ?.error;
      throw new NovaError(
        e?.code ?? codeOfHttpStatus(res.status),
        e?.message ?? `HTTP ${res.status}`,
        e?.details,
      );
    }
    return data as T;
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { raw: text };
  }
}
