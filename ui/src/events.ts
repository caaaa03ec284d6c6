/// <reference lib="dom" />
/**
 * One EventSource per tab on `GET /api/v1/events`, shared by every page that wants live
 * state. EventSource resumes on its own with Last-Event-ID; a `gap` event (events lost
 * while away) tells listeners to read their state again.
 */
import { type ClusterEvent, streamUrl } from "./api.ts";

type Listener = (e: ClusterEvent | "gap") => void;

const listeners = new Set<Listener>();
let source: EventSource | null = null;

function open(): void {
  if (source) return;
  source = new EventSource(streamUrl("/events", { type: "vm,operation,node,ha" }));
  source.onmessage = (m) => {
    const e = JSON.parse(m.data) as ClusterEvent;
    for (const l of listeners) l(e);
  };
  source.addEventListener("gap", () => {
    for (const l of listeners) l("gap");
  });
}

/** Calls `l` for every event from now on; returns the unsubscribe. */
export function subscribe(l: Listener): () => void {
  listeners.add(l);
  open();
  return () => {
    listeners.delete(l);
  };
}

/** Closes the stream (sign-out). */
export function closeEvents(): void {
  source?.close();
  source = null;
}
