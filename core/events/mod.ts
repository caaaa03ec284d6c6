/**
 * The cluster's event stream: VM state changes, operations and their
 * progress, node state, HA actions and audit records, derived from applied
 * Raft entries (derive.ts) into a bounded log in replicated state (log.ts),
 * read by each client from its own position (stream.ts).
 *
 * Every node derives the same events with the same ids (`<raftIndex>-<n>`),
 * so a client can resume with `Last-Event-ID` on any node.
 *
 * @module
 */
export {
  type Before,
  beforeOf,
  confEvents,
  EVENT_TYPES,
  type EventDraft,
  eventsOf,
  type EventType,
  isEventType,
} from "./derive.ts";
export {
  type ClusterEvent,
  type EventFilter,
  type EventPosition,
  type EventReads,
  parseEventId,
} from "./log.ts";
export {
  type EventFeed,
  eventStream,
  type GapNotice,
  idOf,
  type StreamItem,
  type StreamOptions,
} from "./stream.ts";
