/**
 * One reader's view of the event log: where it starts (after an id it names,
 * or the newest `tail` events), what it filters, and what it is told when the
 * events it asked for are no longer kept (a gap).
 *
 * A reader never holds events in memory beyond one page: it reads the log
 * from its own position each time the state machine says something was
 * applied, so a slow client slows only itself (and, if it falls behind the
 * retention window, is told so with a gap).
 */
import {
  before,
  type ClusterEvent,
  type EventFilter,
  type EventPosition,
  type EventReads,
} from "./log.ts";

/** Said instead of events that retention dropped before the reader got them. */
export interface GapNotice {
  /** The id the reader resumed after (or had reached). */
  after: string;
  /** The oldest id still kept: what follows it is complete. */
  oldest: string;
  message: string;
}

/** What a reader gets, in order. */
export type StreamItem =
  | { event: ClusterEvent }
  | { gap: GapNotice }
  /** Nothing happened for a while: a chance to keep the connection alive. */
  | { heartbeat: true };

/** Where the events come from. */
export interface EventFeed {
  reads: EventReads;
  /**
   * Calls `listener` after entries that made events were applied, a snapshot was restored,
   * or the log closed.
   */
  onEvents(listener: () => void): () => void;
  /** The log is closed (the node stops): readers end. */
  readonly closed?: boolean;
}

/** Where a reader starts, what it keeps, and how long it goes on. */
export interface StreamOptions {
  /** Resume after this position (Last-Event-ID); when absent, start with the newest `tail`. */
  since?: EventPosition | null;
  /** With no `since`: how many of the newest matching events come first (0: only new ones). */
  tail?: number;
  filter?: EventFilter;
  /** Wait for new events (true) or end once caught up (false). */
  follow: boolean;
  /** Ends the stream (the client went away). */
  signal: AbortSignal;
  /** A heartbeat after this long without an event (follow only). */
  heartbeatMs?: number;
}

/** Events read per query. */
export const PAGE = 500;

/** The text of a position, as an event id. */
export function idOf(p: EventPosition): string {
  return `${p.index}-${p.n}`;
}

/**
 * The reader's items. The listener is registered before anything is read, and
 * each page is read in one turn of the event loop, so no event applied
 * meanwhile is skipped; a reader's position only grows, so none is repeated.
 * The listener is gone once the generator returns (the signal aborted, not
 * following and caught up, or the consumer stopped).
 */
export async function* eventStream(
  source: EventFeed,
  opts: StreamOptions,
): AsyncGenerator<StreamItem> {
  const filter = opts.filter ?? {};
  let pending = false;
  let wake: (() => void) | null = null;
  const off = source.onEvents(() => {
    pending = true;
    wake?.();
  });
  const onAbort = () => wake?.();
  opts.signal.addEventListener("abort", onAbort);
  try {
    if (source.closed) return;
    let cursor: EventPosition | null;
    if (opts.since) {
      cursor = opts.since;
    } else {
      // Both in one turn: what the tail shows and where following starts agree.
      const first = (opts.tail ?? 0) > 0 ? source.reads.tail(filter, opts.tail!) : [];
      cursor = source.reads.window()?.newest ?? null;
      for (const event of first) yield { event };
    }
    while (!opts.signal.aborted && !source.closed) {
      pending = false;
      // The gap check and the page in one turn: the window cannot move in between.
      let gap: GapNotice | null = null;
      const w = source.reads.window();
      if (cursor && w && before(cursor, w.oldest)) {
        gap = {
          after: idOf(cursor),
          oldest: idOf(w.oldest),
          message: `events after ${idOf(cursor)} are no longer kept (events.keepCount); ` +
            `the stream goes on from ${idOf(w.oldest)}: re-read the state you follow`,
        };
        cursor = { index: w.oldest.index, n: w.oldest.n - 1 };
      }
      const page = source.reads.after(cursor, filter, PAGE);
      cursor = page.scanned ?? cursor;
      if (gap) yield { gap };
      for (const event of page.events) yield { event };
      if (page.events.length >= PAGE || pending) continue;
      if (!opts.follow) return;
      const timedOut = await new Promise<boolean>((resolve) => {
        const timer = opts.heartbeatMs
          ? setTimeout(() => resolve(true), opts.heartbeatMs)
          : undefined;
        wake = () => {
          clearTimeout(timer);
          resolve(false);
        };
        if (pending || opts.signal.aborted) wake();
      });
      wake = null;
      if (timedOut && !opts.signal.aborted && !source.closed) yield { heartbeat: true };
    }
  } finally {
    off();
    opts.signal.removeEventListener("abort", onAbort);
  }
}
