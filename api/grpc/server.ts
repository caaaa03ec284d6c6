/**
 * The gRPC listener (`node start --grpc-port`). Its port belongs to a {@link ConnectionGuard}
 * (api/connection_guard.ts), as the node's main port does: the guard terminates TLS with the
 * node's certificate (switched with {@link GrpcServer.useTls}, as the main port's is),
 * offers h2 and HTTP/1.1 by ALPN, and enforces the header timeout, idle timeout and
 * connection cap; it splices each connection's plaintext to a loopback server for the
 * protocol negotiated: `node:http2` in clear (h2c, gRPC) or `node:http` (Connect and
 * gRPC-Web clients without h2). Connect's Node adapter serves all three protocols on both.
 * With `--insecure-http` the guard splices plain TCP to the h2c server (prior knowledge).
 * mod.ts says why this is its own port.
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import type { Http2ServerRequest, Http2ServerResponse, OutgoingHttpHeaders } from "node:http2";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createContextValues } from "@connectrpc/connect";
import type { NodeTls } from "../../core/pki/mod.ts";
import type { FetchHandler } from "../server.ts";
import { ConnectionGuard, type ConnectionLimits } from "../connection_guard.ts";
import { CLIENT_ADDRESS, novactlServices } from "./services.ts";

type AnyRequest = Http2ServerRequest | http.IncomingMessage;
type AnyResponse = Http2ServerResponse | http.ServerResponse;

export class GrpcServer {
  readonly #guard: ConnectionGuard;
  readonly #h2: http2.Http2Server;
  readonly #h1: http.Server;
  readonly #sessions = new Set<http2.ServerHttp2Session>();
  #closed = false;

  private constructor(guard: ConnectionGuard, h2: http2.Http2Server, h1: http.Server) {
    this.#guard = guard;
    this.#h2 = h2;
    this.#h1 = h1;
    h2.on("session", (s: http2.ServerHttp2Session) => {
      this.#sessions.add(s);
      s.on("close", () => this.#sessions.delete(s));
    });
  }

  /**
   * Serves the node's REST app's gRPC face on `hostname:port` (0: kernel-chosen), over TLS
   * with `tls`; when `tls` is null (`--insecure-http`, loopback only), over h2c alone (prior
   * knowledge). `limits`: the guard's (default: the main port's, from the environment).
   */
  static async listen(opts: {
    hostname: string;
    port: number;
    tls: NodeTls | null;
    app: FetchHandler;
    limits?: ConnectionLimits;
  }): Promise<GrpcServer> {
    const guard = await ConnectionGuard.listen({
      hostname: opts.hostname,
      port: opts.port,
      certificate: opts.tls ? { cert: opts.tls.certPem, key: opts.tls.keyPem } : null,
      limits: opts.limits,
      alpn: ["h2", "http/1.1"],
    });
    const handler = connectNodeAdapter({
      routes: novactlServices(opts.app),
      contextValues: (req) =>
        createContextValues().set(
          CLIENT_ADDRESS,
          guard.connectionFrom(req.socket?.remotePort ?? 0)?.remoteHost ?? "unknown",
        ),
    });
    const serve = (req: AnyRequest, res: AnyResponse) => {
      // The guard's timers stop while a call (a stream on h2) is answered, and the idle
      // clock runs once none is.
      const conn = guard.connectionFrom(req.socket?.remotePort ?? 0);
      if (!conn) {
        // Straight to the loopback server, around the guard (another local process).
        const plain = res as { statusCode: number; end(body: string): void };
        plain.statusCode = 403;
        plain.end("connect to the node's --grpc-port\n");
        return;
      }
      guard.requestStarted(conn);
      let ended = false;
      res.once("close", () => {
        if (!ended) guard.requestEnded(conn);
        ended = true;
      });
      specGrpcMessage(res);
      handler(req as Http2ServerRequest, res as Http2ServerResponse);
    };
    const h2 = http2.createServer(serve);
    const h1 = http.createServer(serve);
    await Promise.all([loopbackListen(h2), loopbackListen(h1)]);
    const h2Port = (h2.address() as AddressInfo).port;
    const h1Port = (h1.address() as AddressInfo).port;
    // A TLS client that negotiated nothing speaks HTTP/1.1; a plain one, h2 (prior knowledge).
    guard.forwardTo(opts.tls ? h1Port : h2Port, { h2: h2Port, "http/1.1": h1Port });
    return new GrpcServer(guard, h2, h1);
  }

  get port(): number {
    return this.#guard.port;
  }

  /** Connections open on the port (for tests and metrics). */
  get openConnections(): number {
    return this.#guard.openConnections;
  }

  /**
   * Presents `tls`'s certificate to new connections from now on, as the main port's
   * `useTls` does (api/server.ts): the port is bound again, open connections keep theirs.
   */
  async useTls(tls: NodeTls): Promise<void> {
    await this.#guard.useCertificate({ cert: tls.certPem, key: tls.keyPem });
  }

  /** Stops accepting and ends open sessions (streams in flight are cancelled). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#guard.close();
    const h2Closed = new Promise<void>((r) => this.#h2.close(() => r()));
    const h1Closed = new Promise<void>((r) => this.#h1.close(() => r()));
    for (const s of this.#sessions) s.destroy();
    this.#h1.closeAllConnections?.();
    await Promise.all([h2Closed, h1Closed]);
  }
}

function loopbackListen(server: http.Server | http2.Http2Server): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/**
 * Connect writes `grpc-message` with encodeURIComponent, while @grpc/grpc-js decodes it with
 * decodeURI, which leaves `%3A` and the like as they are: "name%3A bad" reached clients. The
 * gRPC spec percent-encodes only what is outside 0x20–0x7E, and `%`: re-encoded so here, every
 * client reads the message as sent.
 */
function specGrpcMessage(res: AnyResponse): void {
  const fix = (h: OutgoingHttpHeaders | undefined) => {
    const v = h?.["grpc-message"];
    if (h && typeof v === "string") h["grpc-message"] = specEncode(safeDecode(v));
    return h;
  };
  const addTrailers = res.addTrailers.bind(res) as (t: OutgoingHttpHeaders) => void;
  (res as { addTrailers: unknown }).addTrailers = (t: OutgoingHttpHeaders) => addTrailers(fix(t)!);
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
