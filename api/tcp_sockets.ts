/**
 * What `Deno.listenTls` connections need and Deno 2.9 does not offer, done on
 * their sockets directly through /proc and libc (FFI).
 *
 * **TCP_NODELAY.**
 * Deno 2.9 offers `setNoDelay` on plain TCP connections only. A TLS connection it
 * accepts keeps Nagle's algorithm, so the second TLS record of an answer (20 KB
 * is a 16 KiB record and a small one) waits for the client's delayed ACK: 44 ms
 * on loopback, measured. Linux copies a listening socket's TCP_NODELAY to every
 * connection it accepts, so setting it once on the listener is enough. The
 * listener's descriptor is found through /proc (its socket inode, by the port
 * it listens on) and the option set with libc's `setsockopt`.
 *
 * **Closing before the handshake.** `close()` on an accepted TLS connection whose
 * handshake has not finished leaves its socket open (measured: a client that
 * sent nothing, or half a ClientHello, was still connected 200 s later). Each
 * such socket is shut down with libc's `shutdown`, after which Deno lets it go.
 *
 * @module
 */
import { log } from "../core/log/mod.ts";

const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const TCP_LISTEN_STATE = "0A";

type SockLibc = {
  symbols: {
    shutdown: (fd: number, how: number) => number;
    setsockopt: (fd: number, level: number, name: number, value: Uint8Array, len: number) => number;
    getsockopt: (
      fd: number,
      level: number,
      name: number,
      value: Uint8Array,
      len: Uint8Array,
    ) => number;
  };
  close(): void;
};

/** Opened once, on first use, and kept: these calls come with every refused or early-closed connection. */
let sockLibc: SockLibc | null | undefined;

function openSockLibc(): SockLibc | null {
  if (sockLibc === undefined) sockLibc = dlopenSockLibc();
  return sockLibc;
}

function dlopenSockLibc(): SockLibc | null {
  if (Deno.build.os !== "linux") return null;
  try {
    return Deno.dlopen("libc.so.6", {
      shutdown: { parameters: ["i32", "i32"], result: "i32" },
      setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
      getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
    }) as unknown as SockLibc;
  } catch {
    return null; // no glibc, or no --allow-ffi
  }
}

function hexPort(port: number): string {
  return ":" + port.toString(16).toUpperCase().padStart(4, "0");
}

/** Socket inodes of this machine's TCP sockets in `state` on local port `port`. */
function socketInodes(port: number, state: string | null): Set<string> {
  return socketInodesWhere((local, _remote, st) =>
    local.endsWith(hexPort(port)) && (state === null || st === state)
  );
}

/** Inodes of the TCP sockets (IPv4 and IPv6) whose addresses (as /proc shows them) pass `keep`. */
function socketInodesWhere(
  keep: (local: string, remote: string, state: string) => boolean,
): Set<string> {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length >= 10 && keep(cols[1], cols[2], cols[3])) inodes.add(cols[9]);
    }
  }
  return inodes;
}

/** The socket inode descriptor `fd` holds now, or null. */
function inodeOf(fd: number): string | null {
  try {
    return /^socket:\[(\d+)\]$/.exec(Deno.readLinkSync(`/proc/self/fd/${fd}`))?.[1] ?? null;
  } catch {
    return null; // closed meanwhile
  }
}

/** This process's descriptors that are sockets with one of `inodes`. */
function descriptorsOf(inodes: Set<string>): number[] {
  const fds: number[] = [];
  if (inodes.size === 0) return fds;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    const inode = inodeOf(Number(entry.name));
    if (inode && inodes.has(inode)) fds.push(Number(entry.name));
  }
  return fds;
}

/**
 * Sets TCP_NODELAY on this process's listening socket on `port`, for every
 * connection it accepts from now on. Returns false (and says why, once) where
 * it cannot: not Linux, no FFI permission, or no such listener.
 */
export function setListenerNoDelay(port: number): boolean {
  const libc = openSockLibc();
  if (!libc) {
    warnOnce("TCP_NODELAY cannot be set on the TLS listener (needs Linux and --allow-ffi)");
    return false;
  }
  const fds = descriptorsOf(socketInodes(port, TCP_LISTEN_STATE));
  const one = new Uint8Array(new Int32Array([1]).buffer);
  const set = fds.filter((fd) =>
    libc.symbols.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4) === 0
  );
  if (set.length === 0) warnOnce(`no listening socket of this process found on port ${port}`);
  return set.length > 0;
}

/**
 * TCP_NODELAY of each of this process's sockets on local port `port` (listener
 * and accepted connections), by descriptor: what the tests check.
 */
export function noDelayOfSockets(port: number): Map<number, boolean> {
  const libc = openSockLibc();
  const out = new Map<number, boolean>();
  if (!libc) return out;
  for (const fd of descriptorsOf(socketInodes(port, null))) {
    const value = new Uint8Array(4);
    const len = new Uint8Array(new Uint32Array([4]).buffer);
    if (libc.symbols.getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, value, len) !== 0) continue;
    out.set(fd, new Int32Array(value.buffer)[0] !== 0);
  }
  return out;
}

/** Connections (local port, remote port) waiting for {@link shutDownSockets}. */
const pendingShutdowns = new Set<string>();
let shutdownScheduled = false;
/** One /proc scan serves every connection closed within this window (a flood of refusals). */
const SHUTDOWN_BATCH_MS = 20;

/**
 * Shuts down the socket of this process's TCP connection from local port
 * `localPort` to remote port `remotePort` (soon, together with others closed in
 * the same moment): for a TLS connection closed before its handshake finished.
 */
export function shutDownSocket(localPort: number, remotePort: number): void {
  pendingShutdowns.add(`${hexPort(localPort)} ${hexPort(remotePort)}`);
  if (shutdownScheduled) return;
  shutdownScheduled = true;
  setTimeout(shutDownPending, SHUTDOWN_BATCH_MS);
}

function shutDownPending(): void {
  shutdownScheduled = false;
  const wanted = new Set(pendingShutdowns);
  pendingShutdowns.clear();
  const libc = openSockLibc();
  if (!libc) {
    warnOnce("sockets of TLS connections closed before their handshake cannot be shut down");
    return;
  }
  const inodes = socketInodesWhere((local, remote) =>
    wanted.has(`${local.slice(local.lastIndexOf(":"))} ${remote.slice(remote.lastIndexOf(":"))}`)
  );
  for (const fd of descriptorsOf(inodes)) {
    // The descriptor may have been closed and reused since the scan: check it again.
    const inode = inodeOf(fd);
    if (inode && inodes.has(inode)) libc.symbols.shutdown(fd, SHUT_RDWR);
  }
}

const SHUT_RDWR = 2;

const warned = new Set<string>();
function warnOnce(message: string): void {
  if (warned.has(message)) return;
  warned.add(message);
  log.warn(message, { effect: "TLS connections may be slow to answer or to close" });
}
