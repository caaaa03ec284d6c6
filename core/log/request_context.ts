/**
 * The request a piece of work runs for, carried across awaits (AsyncLocalStorage), so
 * that what a request starts deep in the core (an operation record, a log line) names
 * its request id without every function between passing it on.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";

interface RequestContext {
  requestId: string;
}

const storage = new AsyncLocalStorage<RequestContext>();

/** Runs `fn` as the work of request `requestId`. */
export function runForRequest<T>(requestId: string, fn: () => T): T {
  return storage.run({ requestId }, fn);
}

/** The id of the request the caller runs for; undefined outside any (timers, the leader's own work). */
export function currentRequestId(): string | undefined {
  return storage.getStore()?.requestId;
}
