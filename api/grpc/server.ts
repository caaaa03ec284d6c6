/**
 * The gRPC listener (`node start --grpc-port`): `node:http2`'s secure server with the node's
 * certificate, h2 by ALPN for gRPC, and HTTP/1.1 too (`allowHTTP1`) for Connect and gRPC-Web
 * clients that do not speak h2. Connect's Node adapter serves all three protocols.
 * mod.ts says why this is its own port.
 */
import * as http2 from "node:http2";
import type { Http2ServerRequest, Http2ServerResponse, OutgoingHttpHeaders } from "node:http2";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createContextValues } from "@connectrpc/connect";
import type { NodeTls } from "../../core/pki/mod.ts";
import type { FetchHandler } from "../server.ts";
import { CLIENT_ADDRESS, novactlServices } from "./services.ts";

export class GrpcServer {
  readonly #server: http2.Http2SecureServer | http2.Http2Server;
  readonly #sessions = new Set<http2.ServerHttp2Session>();

  private constructor(server: http2.Http2SecureServer | http2.Http2Server) {
    this.#server = server;
    server.on("session", (s: http2.ServerHttp2Session) => {
      this.#sessions.add(s);
      s.on("close", () => this.#sessions.delete(s));
    });
  }

  /**
   * Serves the node's REST app's gRPC face on `hostname:port` (0: kernel-chosen), over TLS
   * with `tls`; when `tls` is null (`--insecure-http`, loopback only), over h2c alone (prior
   * knowledge: `node:http2` has no HTTP/1.1 fallback in clear).
   */
  static async listen(opts: {
    hostname: string;
    port: number;
    tls: NodeTls | null;
    app: FetchHandler;
  }): Promise<GrpcServer> {
    const handler = connectNodeAdapter({
      routes: novactlServices(opts.app),
      contextValues: (req) =>
        createContextValues().set(CLIENT_ADDRESS, req.socket?.remoteAddress ?? "unknown"),
    });
    const serve = (req: Http2ServerRequest, res: Http2ServerResponse) => {
      specGrpcMessage(res);
      handler(req, res);
    };
    const server = opts.tls
      ? http2.createSecureServer({
        cert: opts.tls.certPem,
        key: opts.tls.keyPem,
        allowHTTP1: true,
      }, serve)
      : http2.createServer(serve);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port, opts.hostname, () => {
        server.off("error", reject);
        resolve();
      });
    });
    return new GrpcServer(server);
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  /** Stops accepting and ends open sessions (streams in flight are cancelled). */
  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.#server.close(() => r()));
    for (const s of this.#sessions) s.destroy();
    await closed;
  }
}

/**
 * Connect writes `grpc-message` with encodeURIComponent, while @grpc/grpc-js decodes it with
 * decodeURI, which leaves `%3A` and the like as they are: "name%3A bad" reached clients. The
 * gRPC spec percent-encodes only what is outside 0x20–0x7E, and `%`: re-encoded so here, every
 * client reads the message as sent.
 */
function specGrpcMessage(res: Http2ServerResponse): void {
  const fix = (h: OutgoingHttpHeaders | undefined) => {
    const v = h?.["grpc-message"];
    if (h && typeof v === "string") h["grpc-message"] = specEncode(safeDecode(v));
    return h;
  };
  const addTrailers = res.addTrailers.bind(res);
  res.addTrailers = (t: OutgoingHttpHeaders) => addTrailers(fix(t)!);
  const writeHead = res.writeHead.bind(res) as (s: number, h?: OutgoingHttpHeaders) => unknown;
  (res as { writeHead: unknown }).writeHead = (status: number, headers?: OutgoingHttpHeaders) =>
    writeHead(status, fix(headers));
}

function safeDecode(v: string): string {
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/** The gRPC spec's percent-encoding of a status message. */
export function specEncode(message: string): string {
  let out = "";
  for (const ch of message) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x20 && c <= 0x7e && ch !== "%") out += ch;
    else {
      for (const b of new TextEncoder().encode(ch)) {
        out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
      }
    }
  }
  return out;
}
