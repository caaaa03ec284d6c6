/**
 * Interactive serial consoles. QEMU's serial chardev is a unix socket server that takes
 * one client at a time (host/kvm/qemu.ts), so the node is that client: one {@link SerialHub}
 * per VM holds the connection while anyone is attached, copies what the guest writes to
 * every attachment and merges what attachments type, one write at a time. The last
 * attachment to go closes the connection, which frees QEMU's slot.
 *
 * QEMU also logs the serial output to the console log; a new attachment gets the log's tail
 * first, so a screen does not start empty.
 *
 * @module
 */
import { readConsole } from "../kvm/console.ts";
import { log } from "../../core/log/mod.ts";

/** How much of the log a new attachment is sent before the live output. */
export const CONSOLE_TAIL_BYTES = 16 << 10;

/** Where an attachment's output goes. */
export interface ConsoleSink {
  /** Bytes the guest wrote (the log's tail first). */
  data(bytes: Uint8Array): void;
  /** The console is gone (the VM stopped, QEMU closed the socket); no more data follows. */
  end(reason: string): void;
}

/** One client's side of a console. */
export interface ConsoleAttachment {
  /** Types `bytes` into the guest's serial port (after input already queued by anyone). */
  write(bytes: Uint8Array): Promise<void>;
  /** Stops the output to this client; the last to detach closes the hub. */
  detach(): void;
}

/** The files of one VM's serial console. */
export interface SerialPaths {
  /** QEMU's serial chardev socket. */
  serial: string;
  /** The console log QEMU appends to. */
  console: string;
}

/** The one connection to a VM's serial chardev, fanned out to its attachments. */
export class SerialHub {
  readonly #conn: Deno.UnixConn;
  readonly #sinks = new Set<ConsoleSink>();
  /** Input, in the order it arrived: one frame's bytes are never interleaved with another's. */
  #writes: Promise<void> = Promise.resolve();
  #closed = false;
  #reason = "";
  readonly #onClose: () => void;

  private constructor(conn: Deno.UnixConn, onClose: () => void) {
    this.#conn = conn;
    this.#onClose = onClose;
  }

  /**
   * Connects to the chardev at `path`.
   * @throws Deno.errors.ConnectionRefused when another client holds QEMU's one slot
   */
  static async open(path: string, onClose: () => void): Promise<SerialHub> {
    const conn = await Deno.connect({ transport: "unix", path });
    const hub = new SerialHub(conn, onClose);
    void hub.#pump();
    return hub;
  }

  get attached(): number {
    return this.#sinks.size;
  }

  /** Adds a sink; its output starts with whatever is read from now on. */
  add(sink: ConsoleSink): void {
    if (this.#closed) return sink.end(this.#reason);
    this.#sinks.add(sink);
  }

  /** Removes a sink; without any left the connection is closed. */
  remove(sink: ConsoleSink): void {
    this.#sinks.delete(sink);
    if (this.#sinks.size === 0) this.close("no one attached");
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.#closed) return Promise.resolve();
    const next = this.#writes.then(async () => {
      for (let off = 0; off < bytes.length && !this.#closed;) {
        off += await this.#conn.write(bytes.subarray(off));
      }
    });
    // One failed write (QEMU went away) must not block the queue: the pump ends the hub.
    this.#writes = next.catch(() => {});
    return next;
  }

  close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reason = reason;
    this.#onClose();
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    for (const s of [...this.#sinks]) s.end(reason);
    this.#sinks.clear();
  }

  async #pump(): Promise<void> {
    const buf = new Uint8Array(16 << 10);
    let reason = "the VM's serial console closed (the VM stopped or moved to another host)";
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        const chunk = buf.slice(0, n);
        for (const s of this.#sinks) s.data(chunk);
      }
    } catch (err) {
      if (!this.#closed) {
        reason = `the VM's serial console failed: ${(err as Error).message}`;
        log.debug("serial console read failed", { error: String(err) });
      }
    }
    this.close(reason);
  }
}

/** The serial hubs of one host's VMs, opened on the first attachment and closed after the last. */
export class SerialConsoles {
  readonly #hubs = new Map<string, Promise<SerialHub>>();

  /**
   * Attaches `sink` to VM `name`'s console: it gets the log's last {@link CONSOLE_TAIL_BYTES},
   * then the live output.
   */
  async attach(name: string, paths: SerialPaths, sink: ConsoleSink): Promise<ConsoleAttachment> {
    const hub = await this.#hub(name, paths.serial);
    // Output that arrives while the tail is read waits behind it, so the screen stays in order
    // (a few bytes may show twice: QEMU logs a chunk after sending it).
    let pending: Uint8Array[] | null = [];
    const buffered: ConsoleSink = {
      data: (b) => pending ? pending.push(b) : sink.data(b),
      end: (r) => {
        pending = null;
        sink.end(r);
      },
    };
    hub.add(buffered);
    try {
      const tail = await readConsole(paths.console, CONSOLE_TAIL_BYTES);
      if (tail.length) sink.data(tail);
    } catch (err) {
      log.debug("console log unreadable", { vm: name, error: String(err) });
    }
    const queued = pending ?? [];
    pending = null;
    for (const b of queued) sink.data(b);
    return {
      write: (bytes) => hub.write(bytes),
      detach: () => hub.remove(buffered),
    };
  }

  /** Closes VM `name`'s hub (its QEMU is going away), ending every attachment with `reason`. */
  async close(name: string, reason: string): Promise<void> {
    const hub = await this.#hubs.get(name)?.catch(() => null);
    hub?.close(reason);
  }

  #hub(name: string, path: string): Promise<SerialHub> {
    let hub = this.#hubs.get(name);
    if (!hub) {
      const opened = SerialHub.open(path, () => {
        if (this.#hubs.get(name) === opened) this.#hubs.delete(name);
      });
      opened.catch(() => {
        if (this.#hubs.get(name) === opened) this.#hubs.delete(name);
      });
      hub = opened;
      this.#hubs.set(name, hub);
    }
    return hub;
  }
}
