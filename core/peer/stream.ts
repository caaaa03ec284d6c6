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
 * its log, and the next batch opens a new stream.
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

/** The sending half of one stream to one peer. */
export class OutboundStream {
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #open = true;
  /** Resolves when the receiver answered or the request failed. */
  readonly ended: Promise<StreamEnd>;

  /**
   * @param post sends the request (the node's signed peer fetch); its body is this stream
   */
  constructor(post: (body: ReadableStream<Uint8Array>) => Promise<Response>) {
    // Counted in bytes: desiredSize is then minus the bytes not yet handed to the socket.
    const body = new ReadableStream<Uint8Array>(
      {
        start: (c) => void (this.#controller = c),
        // fetch gave the body up (the connection broke): nothing more can be written.
        cancel: () => void (this.#open = false),
      },
      new ByteLengthQueuingStrategy({ highWaterMark: 0 }),
    );
    this.ended = post(body).then(
      async (res) => {
        await res.body?.cancel().catch(() => {});
        return { status: res.status };
      },
      (error) => ({ error }),
    ).finally(() => this.close());
  }

  get open(): boolean {
    return this.#open;
  }

  /** Bytes written but not yet taken by the connection (the peer is not reading them). */
  get backlog(): number {
    return this.#open ? Math.max(0, -(this.#controller.desiredSize ?? 0)) : 0;
  }

  /**
   * Queues one frame; false when the stream has closed (or broke before its end was
   * noticed): the frame was not sent. Never throws: it runs inside the Raft loop.
   */
  write(env: Envelope): boolean {
    if (!this.#open) return false;
    try {
      this.#controller.enqueue(encoder.encode(JSON.stringify(env) + "\n"));
      return true;
    } catch {
      this.#open = false; // errored by fetch, its end not yet delivered
      return false;
    }
  }

  /** Ends the body: the receiver answers once it has read what was written. */
  close(): void {
    if (!this.#open) return;
    this.#open = false;
    try {
      this.#controller.close();
    } catch { /* already errored or closed */ }
  }
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
