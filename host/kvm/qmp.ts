/**
 * QMP (QEMU Machine Protocol) client over a VM's unix monitor socket.
 *
 * A QEMU monitor chardev serves ONE client at a time: a second connection is
 * accepted by the kernel but QEMU neither greets nor answers it until the first
 * disconnects. Keep exactly one {@link QmpClient} (or {@link ReconnectingQmp})
 * per VM; a monitor held by someone else shows up here as a connect timeout.
 *
 * Every wait in this module is bounded, so a hung QEMU never stalls the caller.
 * A command that timed out may still run later in QEMU; its late reply is
 * dropped, never handed to another command.
 */
import {
  type ErrorCode,
  NovaError,
  TimeoutError,
  UnavailableError,
} from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  QMP: {
    version: {
      qemu: { major: number; minor: number; micro: number };
      package: string;
    };
    capabilities: string[];
  };
}

export interface QmpConnectOptions {
  /** Bound on connect + greeting + capabilities negotiation. Default 3000. */
  timeoutMs?: number;
  /**
   * Epoch ms until which a missing or refusing socket is retried, for sockets
   * QEMU has not created yet. Without it a missing socket fails at once.
   */
  retryUntil?: number;
}

export interface QmpExecuteOptions {
  /** Default 5000. */
  timeoutMs?: number;
}

export interface WaitForEventOptions {
  timeoutMs: number;
  match?: (e: QmpEvent) => boolean;
}

export type QmpListener = (e: QmpEvent) => void;

const DEFAULT_CONNECT_TIMEOUT_MS = 3000;
const DEFAULT_COMMAND_TIMEOUT_MS = 5000;
const CONNECT_RETRY_INTERVAL_MS = 50;
const READ_CHUNK = 64 * 1024;

/**
 * QEMU (or the guest agent, which speaks the same error format) answered a
 * command with `{"error": {"class", "desc"}}`.
 */
export class QmpError extends NovaError {
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super(codeOfQmpClass(errorClass), `${command}: ${desc} (${errorClass})`, {
      command,
      class: errorClass,
      desc,
    });
    this.name = "QmpError";
  }
}

function codeOfQmpClass(errorClass: string): ErrorCode {
  if (errorClass === "DeviceNotFound") return "not_found";
  if (errorClass === "DeviceNotActive") return "precondition_failed";
  // We build every command ourselves, so any other refusal is most likely our bug.
  return "internal";
}

/**
 * The socket closed (QEMU exited, or the connection dropped). `sent` says
 * whether the command had been written: only an unsent command is known not to
 * have run, and so is the only one safe to repeat on a new connection.
 */
export class QmpClosedError extends UnavailableError {
  constructor(readonly path: string, readonly command: string | null, readonly sent: boolean) {
    const what = command === null
      ? ""
      : sent
      ? `; "${command}" was sent and may or may not have run`
      : `; "${command}" was not sent`;
    super(`QMP socket ${path} is closed (QEMU exited or the connection dropped)${what}`);
    this.name = "QmpClosedError";
  }
}

// ---------------------------------------------------------------------------
// Small socket helpers, shared with the guest agent client (qga.ts).

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/**
 * Races `p` against a timer. A value that arrives after the timeout is handed
 * to `discard` (e.g. to close a connection nobody will use).
 */
export function withTimeout<T>(
  p: Promise<T>,
  ms: number,
  what: string,
  discard?: (late: T) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      reject(new TimeoutError(what));
    }, Math.max(0, ms));
    p.then(
      (v) => {
        if (settled) return discard?.(v);
        settled = true;
        clearTimeout(timer);
        resolve(v);
      },
      (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

function isSocketAbsent(err: unknown): boolean {
  return err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Connects to a unix socket within `timeoutMs`, retrying a missing or refusing
 * socket until `retryUntil` (epoch ms). `what` names the peer in errors.
 */
export async function connectUnix(
  path: string,
  what: string,
  timeoutMs: number,
  retryUntil = 0,
): Promise<Deno.UnixConn> {
  for (;;) {
    try {
      return await withTimeout(
        Deno.connect({ transport: "unix", path }),
        timeoutMs,
        `connecting to ${what} socket ${path} after ${timeoutMs} ms`,
        (late) => late.close(),
      );
    } catch (err) {
      if (err instanceof NovaError) throw err;
      if (!isSocketAbsent(err)) {
        throw new UnavailableError(`cannot connect to ${what} socket ${path}: ${messageOf(err)}`);
      }
      if (Date.now() >= retryUntil) {
        const why = err instanceof Deno.errors.NotFound
          ? "does not exist"
          : "refuses connections (stale socket of an exited QEMU?)";
        throw new UnavailableError(`${what} socket ${path} ${why}; is the VM running?`);
      }
      await sleep(Math.min(CONNECT_RETRY_INTERVAL_MS, retryUntil - Date.now()));
    }
  }
}

/** Writes all of `bytes`; a socket may accept a write only partially. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/**
 * Bytes received but not yet consumed. Messages may be split across reads and
 * one read may carry several, so consumers take whole lines out of here.
 */
export class ByteBuffer {
  #buf = new Uint8Array(0);

  get length(): number {
    return this.#buf.length;
  }

  push(chunk: Uint8Array): void {
    const next = new Uint8Array(this.#buf.length + chunk.length);
    next.set(this.#buf);
    next.set(chunk, this.#buf.length);
    this.#buf = next;
  }

  /** The next complete line without its newline, or null if none is complete yet. */
  takeLine(): Uint8Array | null {
    const nl = this.#buf.indexOf(0x0a);
    if (nl < 0) return null;
    const line = this.#buf.subarray(0, nl);
    this.#buf = this.#buf.subarray(nl + 1);
    return line;
  }

  /** Drops everything up to and including the next `byte`; false if absent (all dropped). */
  skipPast(byte: number): boolean {
    const at = this.#buf.indexOf(byte);
    this.#buf = at < 0 ? new Uint8Array(0) : this.#buf.subarray(at + 1);
    return at >= 0;
  }

  clear(): void {
    this.#buf = new Uint8Array(0);
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Parses one JSON line into an object; null for blank or malformed lines. */
export function parseJsonLine(line: Uint8Array): Record<string, unknown> | null {
  const text = decoder.decode(line).trim();
  if (!text) return null;
  try {
    const v = JSON.parse(text);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

export function encodeLine(msg: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(msg) + "\n");
}

/**
 * Resolves with the first event `subscribe` delivers that has `name` and
 * passes `match`; rejects with TimeoutError after `timeoutMs`.
 */
function waitForEventVia(
  subscribe: (l: QmpListener) => () => void,
  name: string,
  opts: WaitForEventOptions,
  where: string,
  onClose?: (cb: () => void) => () => void,
): Promise<QmpEvent> {
  return new Promise<QmpEvent>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      off();
      offClose?.();
    };
    const timer = setTimeout(() => {
      done();
      reject(
        new TimeoutError(`waiting for QMP event ${name} on ${where} after ${opts.timeoutMs} ms`),
      );
    }, opts.timeoutMs);
    const off = subscribe((e) => {
      if (e.event !== name || (opts.match && !opts.match(e))) return;
      done();
      resolve(e);
    });
    const offClose = onClose?.(() => {
      done();
      reject(new QmpClosedError(where, null, false));
    });
  });
}

// ---------------------------------------------------------------------------

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
}

/** One negotiated QMP session. Create with {@link QmpClient.connect}. */
/** Event subscribers; one that throws is logged and does not stop the others. */
class QmpListeners {
  readonly #set = new Set<QmpListener>();

  add(listener: QmpListener): () => void {
    this.#set.add(listener);
    return () => this.#set.delete(listener);
  }

  emit(e: QmpEvent): void {
    for (const l of [...this.#set]) {
      try {
        l(e);
      } catch (err) {
        log.warn("qmp: event listener threw", { event: e.event, error: messageOf(err) });
      }
    }
  }
}

export class QmpClient {
  readonly closed: Promise<void>;
  #conn: Deno.UnixConn;
  #path: string;
  #greeting: QmpGreeting | null = null;
  #onGreeting: ((g: QmpGreeting) => void) | null = null;
  #pending = new Map<string, Pending>();
  #listeners = new QmpListeners();
  #closeHooks = new Set<() => void>();
  #seq = 0;
  #isClosed = false;
  #writeChain: Promise<void> = Promise.resolve();

  private constructor(conn: Deno.UnixConn, path: string) {
    this.#conn = conn;
    this.#path = path;
    // `closed` settles only once the read loop is over, so a caller awaiting it
    // knows no socket operation is left running.
    this.closed = this.#readLoop();
  }

  /**
   * Connects, waits for QEMU's greeting and negotiates capabilities, all
   * within `timeoutMs` (after the socket exists, when `retryUntil` is given).
   */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const conn = await connectUnix(path, "QMP", timeoutMs, opts.retryUntil);
    const client = new QmpClient(conn, path);
    try {
      await client.#handshake(Date.now() + timeoutMs);
    } catch (err) {
      client.close();
      await client.closed;
      throw err;
    }
    return client;
  }

  get greeting(): QmpGreeting {
    return this.#greeting!;
  }

  get path(): string {
    return this.#path;
  }

  async #handshake(deadline: number): Promise<void> {
    let offClose = () => {};
    const greeted = new Promise<QmpGreeting>((resolve, reject) => {
      this.#onGreeting = resolve;
      offClose = this.#onClose(() => reject(new QmpClosedError(this.#path, null, false)));
    });
    const ms = deadline - Date.now();
    try {
      this.#greeting = await withTimeout(
        greeted,
        ms,
        `waiting for the QMP greeting on ${this.#path} after ${ms} ms ` +
          `(QEMU hung, or another client holds the monitor: QEMU serves one at a time)`,
      );
    } finally {
      offClose();
    }
    await this.execute("qmp_capabilities", undefined, {
      timeoutMs: Math.max(1, deadline - Date.now()),
    });
  }

  /**
   * Runs one command and resolves with its `return` value. Rejects with
   * QmpError when QEMU answers with an error, TimeoutError after `timeoutMs`,
   * QmpClosedError when the socket is or becomes closed.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts: QmpExecuteOptions = {},
  ): Promise<T> {
    if (this.#isClosed) return Promise.reject(new QmpClosedError(this.#path, command, false));
    const id = `n${++this.#seq}`;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    const msg = args === undefined
      ? { execute: command, id }
      : { execute: command, arguments: args, id };
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        // Forgetting the id is what makes a late reply get dropped.
        this.#pending.delete(id);
        reject(new TimeoutError(`QMP ${command} on ${this.#path} after ${timeoutMs} ms`));
      }, timeoutMs);
      const pending = {
        command,
        resolve: resolve as (v: unknown) => void,
        reject,
        timer,
        sent: false,
      };
      this.#pending.set(id, pending);
      this.#send(encodeLine(msg)).then(
        () => pending.sent = true,
        (err) => this.#failUnsent(id, err),
      );
    });
  }

  /** Subscribes to QMP events; returns the unsubscribe function. */
  on(listener: QmpListener): () => void {
    return this.#listeners.add(listener);
  }

  /**
   * Waits for the next event `name` (passing `match`). Call it BEFORE the
   * command that triggers the event, or the event may already be gone.
   */
  waitForEvent(name: string, opts: WaitForEventOptions): Promise<QmpEvent> {
    if (this.#isClosed) return Promise.reject(new QmpClosedError(this.#path, null, false));
    return waitForEventVia((l) => this.on(l), name, opts, this.#path, (cb) => this.#onClose(cb));
  }

  isClosed(): boolean {
    return this.#isClosed;
  }

  /** Closes the socket; pending commands reject. Await `closed` for the read loop to end. */
  close(): void {
    this.#shutdown();
  }

  #send(bytes: Uint8Array): Promise<void> {
    // Concurrent writes could interleave partial writes; keep them in order.
    const op = this.#writeChain.then(() => writeAll(this.#conn, bytes));
    this.#writeChain = op.catch(() => {});
    return op;
  }

  #failUnsent(id: string, err: unknown): void {
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    log.debug("qmp: write failed", { path: this.#path, command: p.command, error: messageOf(err) });
    p.reject(new QmpClosedError(this.#path, p.command, false));
    this.#shutdown();
  }

  async #readLoop(): Promise<void> {
    const buf = new ByteBuffer();
    const chunk = new Uint8Array(READ_CHUNK);
    try {
      for (;;) {
        const n = await this.#conn.read(chunk);
        if (n === null) break;
        buf.push(chunk.subarray(0, n));
        for (let line = buf.takeLine(); line !== null; line = buf.takeLine()) {
          this.#dispatchLine(line);
        }
      }
    } catch (err) {
      if (!this.#isClosed) {
        log.debug("qmp: read failed", { path: this.#path, error: messageOf(err) });
      }
    } finally {
      this.#shutdown();
    }
  }

  #dispatchLine(line: Uint8Array): void {
    const msg = parseJsonLine(line);
    if (!msg) {
      if (line.length) log.warn("qmp: ignoring malformed line", { path: this.#path });
      return;
    }
    if ("QMP" in msg) return this.#onGreeting?.(msg as unknown as QmpGreeting);
    if (typeof msg.event === "string") return this.#listeners.emit(msg as unknown as QmpEvent);
    this.#settle(msg);
  }

  #settle(msg: Record<string, unknown>): void {
    const id = typeof msg.id === "string" ? msg.id : null;
    const p = id === null ? undefined : this.#pending.get(id);
    if (!p) {
      log.debug("qmp: dropping reply nobody waits for", { path: this.#path, id });
      return;
    }
    this.#pending.delete(id!);
    clearTimeout(p.timer);
    const err = msg.error as { class?: unknown; desc?: unknown } | undefined;
    if (err) p.reject(new QmpError(p.command, String(err.class), String(err.desc)));
    else p.resolve(msg.return);
  }

  #onClose(cb: () => void): () => void {
    this.#closeHooks.add(cb);
    return () => this.#closeHooks.delete(cb);
  }

  #shutdown(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
    for (const [id, p] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new QmpClosedError(this.#path, p.command, p.sent));
    }
    for (const cb of [...this.#closeHooks]) cb();
    this.#closeHooks.clear();
  }
}

// ---------------------------------------------------------------------------

export interface ReconnectingQmpOptions {
  /** Bound on each (re)connect. Default 3000. */
  connectTimeoutMs?: number;
  /** How long each connect keeps retrying a not-yet-created socket. Default 0. */
  retryMs?: number;
}

/**
 * A QMP connection to one VM that connects lazily and reconnects once, within
 * the connect timeout, when the previous session was closed (the node process
 * restarted, a transient error, a closed client). Listeners survive reconnects;
 * events emitted while disconnected are lost. It holds the VM's only monitor
 * connection while connected: {@link close} it to let someone else in.
 */
export class ReconnectingQmp {
  #client: QmpClient | null = null;
  #connecting: Promise<QmpClient> | null = null;
  #listeners = new QmpListeners();
  #closed = false;
  #connectTimeoutMs: number;
  #retryMs: number;

  constructor(readonly path: string, opts: ReconnectingQmpOptions = {}) {
    this.#connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#retryMs = opts.retryMs ?? 0;
  }

  /** The live session, connecting once (shared by concurrent callers) if there is none. */
  client(): Promise<QmpClient> {
    if (this.#closed) {
      return Promise.reject(new UnavailableError(`QMP connection to ${this.path} was closed`));
    }
    if (this.#client && !this.#client.isClosed()) return Promise.resolve(this.#client);
    this.#connecting ??= this.#connect().finally(() => this.#connecting = null);
    return this.#connecting;
  }

  isConnected(): boolean {
    return this.#client !== null && !this.#client.isClosed();
  }

  /**
   * Like {@link QmpClient.execute}. A command that provably never reached QEMU
   * (the session was found closed) is repeated once on a fresh session; one
   * that may have run is not, since most QMP commands are not idempotent.
   */
  async execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts?: QmpExecuteOptions,
  ): Promise<T> {
    const first = await this.client();
    try {
      return await first.execute<T>(command, args, opts);
    } catch (err) {
      if (!(err instanceof QmpClosedError) || err.sent) throw err;
      log.debug("qmp: session closed, reconnecting", { path: this.path, command });
      const second = await this.client();
      return await second.execute<T>(command, args, opts);
    }
  }

  on(listener: QmpListener): () => void {
    return this.#listeners.add(listener);
  }

  /** See {@link QmpClient.waitForEvent}; does not connect by itself. */
  waitForEvent(name: string, opts: WaitForEventOptions): Promise<QmpEvent> {
    return waitForEventVia((l) => this.on(l), name, opts, this.path);
  }

  /** Closes for good; resolves once the session (if any) has fully shut down. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#client?.close();
    await this.#client?.closed;
  }

  async #connect(): Promise<QmpClient> {
    const c = await QmpClient.connect(this.path, {
      timeoutMs: this.#connectTimeoutMs,
      retryUntil: this.#retryMs ? Date.now() + this.#retryMs : undefined,
    });
    if (this.#closed) {
      c.close();
      await c.closed;
      throw new UnavailableError(`QMP connection to ${this.path} was closed`);
    }
    c.on((e) => this.#listeners.emit(e));
    this.#client = c;
    return c;
  }
}
