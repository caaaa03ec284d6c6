/**
 * WebSocket plumbing for the console routes (api/routes/console.ts): upgrading a request,
 * piping two sockets, and piping a socket to a stream connection (QEMU's VNC server).
 *
 * A request upgraded by `Deno.upgradeWebSocket` loses its headers: whatever a route needs
 * from them is read before {@link upgrade}.
 *
 * @module
 */
import type { Context } from "hono";
import { ValidationError } from "../core/errors/mod.ts";
import type { Env } from "./context.ts";

/** The subprotocols the client offered (noVNC offers `binary`). */
export function offeredProtocols(c: Context<Env>): string[] {
  return (c.req.header("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim())
    .filter(Boolean);
}

/** Refuses a request that is not a WebSocket handshake (400). */
export function requireWebSocket(c: Context<Env>): void {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new ValidationError("this endpoint speaks WebSocket only (Upgrade: websocket)");
  }
}

/** Upgrades the request; `protocol`, if given, is the subprotocol answered. */
export function upgrade(
  c: Context<Env>,
  protocol?: string,
): { socket: WebSocket; response: Response } {
  const { socket, response } = Deno.upgradeWebSocket(c.req.raw, {
    ...(protocol ? { protocol } : {}),
  });
  socket.binaryType = "arraybuffer";
  return { socket, response };
}

/** The bytes of a frame: binary as is, text as UTF-8. */
export function frameBytes(data: unknown): Uint8Array {
  if (typeof data === "string") return new TextEncoder().encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  return new Uint8Array();
}

/** Sends when open; a socket that is closing drops what it is sent. */
export function sendIfOpen(socket: WebSocket, data: Uint8Array | string): void {
  if (socket.readyState === WebSocket.OPEN) socket.send(data);
}

/** Closes with `code` and a reason cut to the 123 bytes a close frame holds. */
export function closeSocket(socket: WebSocket, code = 1000, reason = ""): void {
  if (socket.readyState === WebSocket.CLOSED || socket.readyState === WebSocket.CLOSING) return;
  let r = reason;
  while (new TextEncoder().encode(r).length > 123) r = r.slice(0, -1);
  try {
    socket.close(code, r);
  } catch {
    socket.close();
  }
}

/** Waits for `socket` (a client socket) to open; false when it fails or closes first. */
export function opened(socket: WebSocket, timeoutMs: number): Promise<boolean> {
  if (socket.readyState === WebSocket.OPEN) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      done(false);
      socket.close();
    }, timeoutMs);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.removeEventListener("open", onOpen);
      socket.removeEventListener("close", onFail);
      socket.removeEventListener("error", onFail);
      resolve(ok);
    };
    const onOpen = () => done(true);
    const onFail = () => done(false);
    socket.addEventListener("open", onOpen);
    socket.addEventListener("close", onFail);
    socket.addEventListener("error", onFail);
  });
}

/**
 * Pipes two sockets both ways, frame for frame (`a` may still be opening; `b` is open). When
 * one closes, the other is closed with its code and reason.
 */
export function pipeSockets(a: WebSocket, b: WebSocket): void {
  b.binaryType = "arraybuffer";
  // What `b` says before `a` is open (a console's backlog) waits for it.
  let early: (Uint8Array | string)[] | null = a.readyState === WebSocket.OPEN ? null : [];
  if (early) {
    a.addEventListener("open", () => {
      for (const m of early ?? []) sendIfOpen(a, m);
      early = null;
    }, { once: true });
  }
  a.onmessage = (e) => sendIfOpen(b, typeof e.data === "string" ? e.data : frameBytes(e.data));
  b.onmessage = (e) => {
    const m = typeof e.data === "string" ? e.data : frameBytes(e.data);
    if (early) early.push(m);
    else sendIfOpen(a, m);
  };
  a.onclose = (e) => closeSocket(b, closeCode(e.code), e.reason);
  b.onclose = (e) => closeSocket(a, closeCode(e.code), e.reason);
  a.onerror = () => closeSocket(b, 1011);
  b.onerror = () => closeSocket(a, 1011);
}

/** Codes a peer may not send in a close frame (1005 none given, 1006 abnormal) become 1000/1011. */
function closeCode(code: number): number {
  if (code === 1005) return 1000;
  if (code === 1006 || code < 1000 || (code > 1011 && code < 3000)) return 1011;
  return code;
}

/** Pipes a socket to a stream connection both ways: binary frames to bytes and back. */
export function pipeConn(socket: WebSocket, conn: Deno.Conn): void {
  let closed = false;
  const end = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch { /* already closed */ }
    closeSocket(socket, 1000);
  };
  // Frames are written in order: a socket's messages arrive faster than a write completes.
  let writes = Promise.resolve();
  socket.onmessage = (e) => {
    const bytes = frameBytes(e.data);
    writes = writes.then(async () => {
      for (let off = 0; off < bytes.length && !closed;) {
        off += await conn.write(bytes.subarray(off));
      }
    }).catch(end);
  };
  socket.onclose = end;
  socket.onerror = end;
  const pump = async () => {
    const buf = new Uint8Array(64 << 10);
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        sendIfOpen(socket, buf.slice(0, n));
      }
    } catch { /* the connection went away */ }
    end();
  };
  if (socket.readyState === WebSocket.OPEN) void pump();
  else socket.addEventListener("open", () => void pump(), { once: true });
}
