/**
 * qemu-guest-agent client over the host end of its virtio-serial chardev:
 *
 *   -chardev socket,id=qga0,path=SOCK,server=on,wait=off
 *   -device virtio-serial-pci
 *   -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0
 *
 * The socket connects whether or not an agent runs in the guest, and the
 * channel may hold stale bytes from an earlier session or a half-read command.
 * So each session starts with `guest-sync-delimited` (whose reply follows a
 * 0xFF sentinel) and everything before our own sync reply is thrown away.
 * After a timeout the session is resynced before the next call, which drops
 * the late reply: the agent answers strictly in order.
 *
 * The chardev takes one client at a time, so calls are serialized and share
 * one lazily opened connection. Everything the guest sends is untrusted.
 */
import { TimeoutError, UnavailableError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import { GUEST_LIMITS } from "../../core/fsm/command_schemas.ts";
import {
  ByteBuffer,
  connectUnix,
  encodeLine,
  parseJsonLine,
  QmpError,
  sleep,
  withTimeout,
  writeAll,
} from "./qmp.ts";

export interface GuestOsInfo {
  id?: string;
  name?: string;
  prettyName?: string;
  version?: string;
  kernelRelease?: string;
  machine?: string;
}

export interface GuestAddress {
  type: "ipv4" | "ipv6";
  address: string;
  prefix: number;
}

export interface GuestInterface {
  name: string;
  mac?: string;
  addresses: GuestAddress[];
}

export type ShutdownMode = "powerdown" | "reboot" | "halt";

export interface GuestAgentOptions {
  /** Default bound per call, and on resyncing for every call. Default 2000. */
  timeoutMs?: number;
}

export interface CallOptions {
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 2000;
/** fs-freeze flushes every filesystem first, which can take long on a busy guest. */
const FREEZE_TIMEOUT_MS = 60_000;
const SENTINEL = 0xff;
/** A guest flooding the channel must not grow host memory without bound. */
const MAX_BUFFERED = 8 * 1024 * 1024;
const READ_CHUNK = 64 * 1024;

/** One connection to the chardev, read continuously into `inbox`. */
class Session {
  readonly inbox = new ByteBuffer();
  readonly done: Promise<void>;
  synced = false;
  eof = false;
  #wake: (() => void) | null = null;

  constructor(readonly conn: Deno.UnixConn, readonly path: string) {
    this.done = this.#readLoop();
  }

  /** Waits for more bytes or EOF; false when `deadline` passed first. */
  waitForData(deadline: number): Promise<boolean> {
    if (this.eof) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = null;
        resolve(false);
      }, Math.max(0, deadline - Date.now()));
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve(true);
      };
    });
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }

  async #readLoop(): Promise<void> {
    const chunk = new Uint8Array(READ_CHUNK);
    try {
      for (;;) {
        const n = await this.conn.read(chunk);
        if (n === null) break;
        this.inbox.push(chunk.subarray(0, n));
        if (this.inbox.length > MAX_BUFFERED) {
          log.warn("qga: guest sent too much unread data; dropping the session", {
            path: this.path,
          });
          break;
        }
        this.#wake?.();
      }
    } catch {
      // Closed by us or reset by QEMU: either way the session is over.
    } finally {
      this.eof = true;
      this.close();
      this.#wake?.();
    }
  }
}

/** A minimal FIFO lock: the agent channel must see one exchange at a time. */
class Mutex {
  #tail: Promise<void> = Promise.resolve();

  lock(): Promise<() => void> {
    let release!: () => void;
    const held = new Promise<void>((r) => release = r);
    const acquired = this.#tail.then(() => release);
    this.#tail = this.#tail.then(() => held);
    return acquired;
  }
}

/** The connection ended under a call; the call fails as "unavailable". */
class ChannelClosedError extends UnavailableError {}

function randomSyncId(): number {
  // The agent takes an int; staying positive and below 2^31 suits every version.
  return crypto.getRandomValues(new Uint32Array(1))[0] & 0x7fffffff;
}

export class GuestAgent {
  #path: string;
  #timeoutMs: number;
  #session: Session | null = null;
  #mutex = new Mutex();
  #seq = 0;

  constructor(socketPath: string, opts: GuestAgentOptions = {}) {
    this.#path = socketPath;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** True when an agent answers; false when none does in time. Never throws for "absent". */
  async ping(timeoutMs = this.#timeoutMs): Promise<boolean> {
    try {
      await this.execute("guest-ping", undefined, { timeoutMs });
      return true;
    } catch (err) {
      if (err instanceof TimeoutError || err instanceof UnavailableError) return false;
      throw err;
    }
  }

  async osInfo(opts?: CallOptions): Promise<GuestOsInfo> {
    const r = await this.execute<Record<string, unknown>>("guest-get-osinfo", undefined, opts);
    return dropUndefined({
      id: str(r?.["id"]),
      name: str(r?.["name"]),
      prettyName: str(r?.["pretty-name"]),
      version: str(r?.["version"]),
      kernelRelease: str(r?.["kernel-release"]),
      machine: str(r?.["machine"]),
    });
  }

  async interfaces(opts?: CallOptions): Promise<GuestInterface[]> {
    const r = await this.execute<unknown>("guest-network-get-interfaces", undefined, opts);
    // The guest decides how many interfaces and addresses it claims: keep a bounded few.
    return Array.isArray(r)
      ? r.slice(0, 4 * GUEST_LIMITS.interfaces).map(toInterface).filter((i) => i !== null)
        .slice(0, GUEST_LIMITS.interfaces)
      : [];
  }

  /** Freezes all guest filesystems; resolves with how many were frozen. */
  async fsFreeze(opts?: CallOptions): Promise<number> {
    const n = await this.execute<unknown>("guest-fsfreeze-freeze", undefined, {
      timeoutMs: opts?.timeoutMs ?? FREEZE_TIMEOUT_MS,
    });
    return typeof n === "number" ? n : 0;
  }

  /** Thaws guest filesystems; resolves with how many were thawed. */
  async fsThaw(opts?: CallOptions): Promise<number> {
    const n = await this.execute<unknown>("guest-fsfreeze-thaw", undefined, {
      timeoutMs: opts?.timeoutMs ?? FREEZE_TIMEOUT_MS,
    });
    return typeof n === "number" ? n : 0;
  }

  /**
   * Asks the guest to shut down. The agent sends no reply on success, so once
   * it has proven alive (the sync), silence or EOF within the timeout counts as
   * success; only an error reply fails. An absent agent still rejects.
   */
  async shutdown(mode: ShutdownMode = "powerdown", opts?: CallOptions): Promise<void> {
    await this.#exchange("guest-shutdown", { mode }, opts?.timeoutMs, false);
  }

  /**
   * Runs a program in the guest (`guest-exec`) and waits for it to end
   * (`guest-exec-status`); resolves with its exit code and output.
   * @throws {TimeoutError} when it has not ended after `timeoutMs`.
   */
  async run(
    path: string,
    args: string[],
    timeoutMs = 30_000,
  ): Promise<{ exitCode: number | null; stdout: string; stderr: string }> {
    const { pid } = await this.execute<{ pid: number }>("guest-exec", {
      path,
      arg: args,
      "capture-output": true,
    });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await this.execute<{
        exited: boolean;
        exitcode?: number;
        "out-data"?: string;
        "err-data"?: string;
      }>("guest-exec-status", { pid });
      if (st.exited) {
        const text = (b64?: string) =>
          b64 ? new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))) : "";
        return {
          exitCode: st.exitcode ?? null,
          stdout: text(st["out-data"]),
          stderr: text(st["err-data"]),
        };
      }
      if (Date.now() > deadline) {
        throw new TimeoutError(`guest program ${path} after ${timeoutMs} ms`);
      }
      await sleep(100);
    }
  }

  /** Runs any agent command; rejects with QmpError, TimeoutError or UnavailableError. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts?: CallOptions,
  ): Promise<T> {
    return this.#exchange(command, args, opts?.timeoutMs, true) as Promise<T>;
  }

  /** Drops the connection (the next call reconnects); resolves once it is fully shut. */
  async close(): Promise<void> {
    const s = this.#session;
    this.#session = null;
    s?.close();
    await s?.done;
  }

  async #exchange(
    command: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number | undefined,
    expectReply: boolean,
  ): Promise<unknown> {
    const start = Date.now();
    const deadline = start + (timeoutMs ?? this.#timeoutMs);
    const what = `guest agent ${command} on ${this.#path}`;
    const release = await withTimeout(
      this.#mutex.lock(),
      deadline - Date.now(),
      `${what}: waiting for the previous call, after ${deadline - start} ms`,
      (late) => late(),
    );
    const syncDeadline = Math.min(deadline, start + this.#timeoutMs);
    try {
      const progress = { sent: false };
      try {
        return await this.#attempt(command, args, deadline, syncDeadline, expectReply, progress);
      } catch (err) {
        // A connection found dead before our command went out (QEMU restarted
        // the chardev, a stale session) costs one fresh attempt, nothing more.
        if (!(err instanceof ChannelClosedError) || progress.sent) throw err;
        log.debug("qga: channel closed before sending, retrying", { path: this.#path, command });
        return await this.#attempt(command, args, deadline, syncDeadline, expectReply, progress);
      }
    } finally {
      release();
    }
  }

  async #attempt(
    command: string,
    args: Record<string, unknown> | undefined,
    deadline: number,
    syncDeadline: number,
    expectReply: boolean,
    progress: { sent: boolean },
  ): Promise<unknown> {
    const what = `guest agent ${command} on ${this.#path}`;
    const s = await this.#ready(syncDeadline, what);
    return await this.#call(s, command, args, deadline, expectReply, progress);
  }

  /** A connected, synced session; a live agent answers the sync at once. */
  async #ready(deadline: number, what: string): Promise<Session> {
    if (this.#session?.eof) this.#session = null;
    if (!this.#session) {
      const conn = await connectUnix(this.#path, "guest agent", deadline - Date.now());
      this.#session = new Session(conn, this.#path);
    }
    const s = this.#session;
    if (!s.synced) await this.#sync(s, deadline, what);
    return s;
  }

  async #sync(s: Session, deadline: number, what: string): Promise<void> {
    const id = randomSyncId();
    const line = encodeLine({ execute: "guest-sync-delimited", arguments: { id } });
    // The leading 0xFF makes the agent's parser drop any half-received command.
    const bytes = new Uint8Array(line.length + 1);
    bytes[0] = SENTINEL;
    bytes.set(line, 1);
    await this.#write(s, bytes, deadline, `${what} (sync)`);
    for (;;) {
      await this.#skipToSentinel(s, deadline, `${what} (sync)`);
      const msg = parseJsonLine(await this.#nextLine(s, deadline, `${what} (sync)`));
      if (msg?.return === id) break;
      log.debug("qga: dropping stale sync reply", { path: this.#path });
    }
    s.synced = true;
  }

  async #call(
    s: Session,
    command: string,
    args: Record<string, unknown> | undefined,
    deadline: number,
    expectReply: boolean,
    progress: { sent: boolean },
  ): Promise<unknown> {
    const what = `guest agent ${command} on ${this.#path}`;
    const id = `g${++this.#seq}`;
    const msg = args === undefined
      ? { execute: command, id }
      : { execute: command, arguments: args, id };
    await this.#write(s, encodeLine(msg), deadline, what);
    progress.sent = true;
    try {
      return await this.#reply(s, command, id, deadline, what);
    } catch (err) {
      if (expectReply || !(err instanceof TimeoutError || err instanceof UnavailableError)) {
        throw err;
      }
      return undefined;
    }
  }

  async #reply(
    s: Session,
    command: string,
    id: string,
    deadline: number,
    what: string,
  ): Promise<unknown> {
    for (;;) {
      const msg = parseJsonLine(stripSentinels(await this.#nextLine(s, deadline, what)));
      // Replies echo our id; one carrying another id is left over from before.
      if (!msg || (msg.id !== undefined && msg.id !== id)) continue;
      const err = msg.error as { class?: unknown; desc?: unknown } | undefined;
      if (err) throw new QmpError(command, String(err.class), String(err.desc));
      if ("return" in msg) return msg.return;
    }
  }

  async #write(s: Session, bytes: Uint8Array, deadline: number, what: string): Promise<void> {
    try {
      await withTimeout(writeAll(s.conn, bytes), deadline - Date.now(), `${what}, writing`);
    } catch (err) {
      // A write stuck or cut short leaves the channel in an unknown state.
      this.#drop(s);
      if (err instanceof TimeoutError) throw err;
      throw new ChannelClosedError(`${what}: guest agent socket is closed`);
    }
  }

  async #skipToSentinel(s: Session, deadline: number, what: string): Promise<void> {
    while (!s.inbox.skipPast(SENTINEL)) await this.#more(s, deadline, what);
  }

  async #nextLine(s: Session, deadline: number, what: string): Promise<Uint8Array> {
    for (;;) {
      const line = s.inbox.takeLine();
      if (line) return line;
      await this.#more(s, deadline, what);
    }
  }

  async #more(s: Session, deadline: number, what: string): Promise<void> {
    if (s.eof) {
      this.#drop(s);
      throw new ChannelClosedError(`${what}: guest agent socket closed`);
    }
    if (await s.waitForData(deadline)) return;
    // Whatever answers later must not be taken for the next call's reply.
    s.synced = false;
    throw new TimeoutError(`${what}, no answer in time (is the guest agent running?)`);
  }

  #drop(s: Session): void {
    s.close();
    if (this.#session === s) this.#session = null;
  }
}

function stripSentinels(line: Uint8Array): Uint8Array {
  let i = 0;
  while (i < line.length && line[i] === SENTINEL) i++;
  return line.subarray(i);
}

/**
 * A guest-supplied string, cut to `max` characters with control characters
 * replaced: it ends up in cluster state, tables and logs (see GUEST_LIMITS).
 */
function str(v: unknown, max: number = GUEST_LIMITS.stringChars): string | undefined {
  return typeof v === "string" ? v.slice(0, max).replace(/\p{Cc}/gu, "?") : undefined;
}

function dropUndefined<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

function toInterface(raw: unknown): GuestInterface | null {
  if (!raw || typeof raw !== "object") return null;
  const r = raw as Record<string, unknown>;
  const name = str(r["name"], GUEST_LIMITS.interfaceNameChars);
  if (!name) return null;
  const ips = Array.isArray(r["ip-addresses"])
    ? r["ip-addresses"].slice(0, 4 * GUEST_LIMITS.addressesPerInterface)
    : [];
  const iface: GuestInterface = {
    name,
    addresses: ips.map(toAddress).filter((a) => a !== null)
      .slice(0, GUEST_LIMITS.addressesPerInterface),
  };
  const mac = str(r["hardware-address"], GUEST_LIMITS.macChars);
  if (mac) iface.mac = mac;
  return iface;
}

/** The longest textual IP address (IPv6 with an embedded IPv4); the host appends `/prefix`. */
const MAX_ADDRESS_CHARS = 45;

function toAddress(raw: unknown): GuestAddress | null {
  if (!raw || typeof raw !== "object") return null;
  const r = raw as Record<string, unknown>;
  const type = r["ip-address-type"];
  const rawAddress = r["ip-address"];
  // A cut address would be a wrong one: longer than any real address means none.
  if (typeof rawAddress !== "string" || rawAddress.length > MAX_ADDRESS_CHARS) return null;
  const address = str(rawAddress, MAX_ADDRESS_CHARS);
  const prefix = r["prefix"];
  if ((type !== "ipv4" && type !== "ipv6") || !address || typeof prefix !== "number") return null;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 128) return null;
  return { type, address, prefix };
}
