/**
 * Reading a Server-Sent Events stream (the client side of GET /api/v1/events):
 * the CLI and tests use it. Follows the WHATWG rules for the fields used here:
 * `id`, `event`, `data` (lines joined by "\n"), and comments (lines starting
 * with ":"), which are reported so a reader can see heartbeats.
 */

/** One message of the stream; `comment` alone for a comment line. */
export interface SseMessage {
  id?: string;
  /** The `event:` field; absent for plain messages. */
  event?: string;
  data: string;
  /** The text of a comment line (a heartbeat), when this is one. */
  comment?: string;
}

/** The messages of `body`, as they arrive; ends with the body. */
export async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const lines = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let msg: { id?: string; event?: string; data: string[] } = { data: [] };
  try {
    for (;;) {
      const { done, value } = await lines.read();
      if (done) break;
      buf += value;
      let nl: number;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (msg.data.length || msg.id !== undefined || msg.event !== undefined) {
            yield { id: msg.id, event: msg.event, data: msg.data.join("\n") };
          }
          msg = { data: [] };
        } else if (line.startsWith(":")) {
          yield { data: "", comment: line.slice(1).trim() };
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "data") msg.data.push(value);
          else if (field === "id") msg.id = value;
          else if (field === "event") msg.event = value;
        }
      }
    }
  } finally {
    await lines.cancel().catch(() => {});
  }
}
