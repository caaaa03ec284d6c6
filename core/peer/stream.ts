/**
 * Raft messages to one peer over one long-lived request, as etcd's rafthttp
 * streams them: the sender opens `POST /internal/raft/stream` once and writes
 * each batch of messages into its body as one frame, a line of JSON (an
 * {@link Envelope}; JSON escapes every newline inside it). The receiver steps
 * each frame as it arrives and answers only when the body ends.
 *
 * A POST per batch cost each message a request through the sender's HTTP client
 * and the receiver's listener, router and authentication: at one client, 8 such
 * requests per replicated write on the leader, the larger part of its CPU. On a
 * stream a frame costs a write and a JSON parse. The request is authenticated
 * once, when it opens (a signed request whose body is not hashed: TLS carries
 * its integrity, see signature.ts), and the receiver checks every frame's sender
 * against that identity, and its membership, as it did per POST.
 *
 * A stream that breaks (the peer restarted, refused it, or stopped reading) is
 * dropped; Raft is told the peer is unreachable, so it probes and re-sends from
 * its log, and the next batch opens a new stream. A stream can also fail
 * silently: a connection whose handshake hangs takes none of the frames, and
 * nothing ever answers. So the sender aborts a stream whose oldest frame has
 * waited `streamStallMs`, and retires every stream after `streamMaxAgeMs`
 * (closing it cleanly and opening the next), which bounds any failure neither
 * side can see — a cluster's simulated hosts once sat for minutes as learners
 * that never heard from the leader.
 *
 * @module
 */
import type { Envelope } from "./transport.ts";

export const RAFT_STREAM_PATH = "/internal/raft/stream";
/** Content type of a stream's body: newline-delimited JSON envelopes. */
export const RAFT_STREAM_TYPE = "application/x-novactl-raft-frames";

const encoder = new TextEncoder();

/** How a stream ended: the receiver's status, or the error that broke it. */
export type StreamEnd = { status: number } | { error: unknown };

/**
 * The sending half of one stream to one peer. Frames wait in the stream's own
 * queue until the connection asks for more, so the stream knows how long the
 * oldest unsent frame has waited: a connection that takes nothing for seconds
 * (a connect or handshake that hangs, a peer that stopped reading) is stalled,
 * which a byte count alone would show only after megabytes of heartbeats.
 */
export class OutboundStream {
  #queue: Uint8Array[] = [];
  #queued = 0;
  /** When the oldest frame still in the queue was written. */
  #oldestAt = 0;
  #open = true;
  #closedByUs = false;
  /** Resolves the connection's pending request for more, if it is waiting. */
  #wake: (() => void) | null = null;
  readonly #abort = new AbortController();
  /** When the stream was opened (performance.now()). */
  readonly openedAt = performance.now();
  /** Resolves when the receiver answered or the request failed. */
  readonly ended: Promise<StreamEnd>;

  /**
   * @param post sends the request (the node's signed peer fetch); its body is this
   *   stream, and `signal` aborts it
   */
  constructor(post: (body: ReadableStream<Uint8Array>, signal: AbortSignal) => Promise<Response>) {
    const body = new ReadableStream<Uint8Array>(
      {
        pull: (c) => this.#pull(c),
        // fetch gave the body up (the connection broke): nothing more can be written.
        cancel: () => this.#discard(),
      },
      { highWaterMark: 0 },
    );
    this.ended = post(body, this.#abort.signal).then(
      async (res) => {
        await res.body?.cancel().catch(() => {});
        return { status: res.status };
      },
      (error) => ({ error }),
    ).finally(() => this.#discard());
  }

  get open(): boolean {
    return this.#open;
  }

  /** Whether {@link close} ended it (so a 200 means every frame was read). */
  get closedByUs(): boolean {
    return this.#closedByUs;
  }

  /** Bytes written but not yet taken by the connection (the peer is not reading them). */
  get backlog(): number {
    return this.#queued;
  }

  /** How long the connection has left written frames untaken (0 when it has taken all). */
  stalledMs(now = performance.now()): number {
    return this.#queued > 0 ? now - this.#oldestAt : 0;
  }

  /**
   * Queues one frame; false when the stream has closed (or broke before its end was
   * noticed): the frame was not sent. Never throws: it runs inside the Raft loop.
   */
  write(env: Envelope): boolean {
    if (!this.#open) return false;
    const frame = encoder.encode(JSON.stringify(env) + "\n");
    if (this.#queued === 0) this.#oldestAt = performance.now();
    this.#queue.push(frame);
    this.#queued += frame.length;
    this.#wakeConnection();
    return true;
  }

  /** Ends the body: the receiver answers once it has read what was written. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#closedByUs = true;
    this.#wakeConnection();
  }

  /** Gives the request up at once: what was not delivered is lost. */
  abort(): void {
    this.#discard();
    this.#abort.abort(new Error("raft stream aborted"));
  }

  /** The connection wants more: everything queued goes as one chunk, or the body ends. */
  async #pull(c: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    while (this.#queued === 0) {
      if (!this.#open) {
        try {
          c.close();
        } catch { /* cancelled by fetch: already closed */ }
        return;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    const chunk = this.#queue.length === 1 ? this.#queue[0] : concat(this.#queue, this.#queued);
    this.#queue = [];
    this.#queued = 0;
    try {
      c.enqueue(chunk);
    } catch {
      this.#discard(); // cancelled meanwhile
    }
  }

  #wakeConnection(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Nothing more can be sent: drops what waits and releases a waiting pull. */
  #discard(): void {
    this.#open = false;
    this.#queue = [];
    this.#queued = 0;
    this.#wakeConnection();
  }
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Reads frames from a stream's body and hands each, parsed, to `onFrame` in
 * order, until the body ends or `onFrame` throws (which rejects). A frame longer
 * than `maxFrameBytes` is refused without buffering the rest of it.
 */
export async function readFrames(
  body: AsyncIterable<Uint8Array>,
  maxFrameBytes: number,
  onFrame: (env: Envelope) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of body) {
    const text = pending + decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
      onFrame(parseFrame(text.slice(start, nl)));
      start = nl + 1;
    }
    pending = text.slice(start);
    if (pending.length > maxFrameBytes) throw new FrameError(`frame over ${maxFrameBytes} bytes`);
  }
  if (pending.trim()) throw new FrameError("stream ended inside a frame");
}

/** A frame that is not an envelope, or too long. */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

function parseFrame(line: string): Envelope {
  let env: unknown;
  try {
    env = JSON.parse(line);
  } catch {
    throw new FrameError("frame is not JSON");
  }
  const e = env as Partial<Envelope> | null;
  if (
    typeof e !== "object" || e === null || typeof e.from !== "string" ||
    typeof e.clusterId !== "string" || !Array.isArray(e.messages)
  ) {
    throw new FrameError("frame is not a Raft envelope");
  }
  return e as Envelope;
}
