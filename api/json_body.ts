/**
 * Large JSON answers sent in pieces.
 *
 * A list of 10,000 VMs is 4.7 MiB of JSON. Joined into one string and encoded
 * at once, each answer makes a string and a buffer of that size; V8 puts such
 * objects straight into its old generation, which it collects only once the heap
 * reaches a limit raised by earlier load, so a burst of lists piles up hundreds of
 * MiB of garbage. Pieces of {@link PIECE_CHARS} are young objects, freed by the
 * next scavenge, and the stream encodes the next piece only when the connection
 * takes it.
 *
 * @module
 */

/** About this many characters per piece (items are never split). */
export const PIECE_CHARS = 64 * 1024;

/**
 * `head` + the items joined by commas + `tail`: one string when it is small, else a stream
 * of UTF-8 pieces. The items are read as they are sent, so pass strings that do not change
 * (they are immutable in JavaScript: an array of them is a consistent snapshot).
 */
export function jsonJoined(
  head: string,
  items: readonly string[],
  tail: string,
): string | ReadableStream<Uint8Array> {
  const total = items.reduce((n, s) => n + s.length + 1, head.length + tail.length);
  if (total <= PIECE_CHARS) return head + items.join(",") + tail;
  const encoder = new TextEncoder();
  let next = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      let piece = next === 0 ? head : "";
      while (next < items.length && piece.length < PIECE_CHARS) {
        piece += (next === 0 ? "" : ",") + items[next++];
      }
      if (next === items.length) {
        controller.enqueue(encoder.encode(piece + tail));
        controller.close();
      } else {
        controller.enqueue(encoder.encode(piece));
      }
    },
  }, { highWaterMark: 0 });
}
