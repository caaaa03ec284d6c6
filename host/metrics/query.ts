/**
 * A history request's window and step (`?since=1h&step=1m`), checked against what the rings
 * hold: the 10-second ring answers windows up to 24 hours, the 5-minute ring up to 30 days.
 */
import { ValidationError } from "../../core/errors/mod.ts";
import { COARSE, FINE, type Ring, spanMs } from "./history.ts";

/** The steps a client may ask for, in ascending order. */
export const STEPS = ["10s", "30s", "1m", "5m", "15m", "30m", "1h", "6h", "1d"] as const;
export type Step = typeof STEPS[number];

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** At most this many points when the client names no step. */
const DEFAULT_POINTS = 360;

export const DEFAULT_SINCE = "1h";

export interface HistoryWindow {
  ring: Ring;
  from: number;
  to: number;
  stepMs: number;
  /** The step as the client may write it (e.g. "10s"). */
  step: Step;
}

/** Milliseconds of a duration like 90s, 15m, 24h, 7d; null when it is not one. */
export function durationMs(text: string): number | null {
  const m = /^(\d{1,9})(s|m|h|d)$/.exec(text);
  return m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : null;
}

/**
 * The window `since` before `now`, in points `step` apart (by default the finest step that
 * gives at most {@link DEFAULT_POINTS} points).
 *
 * @throws {ValidationError} naming `since` or `step` when the ring cannot answer it
 */
export function historyWindow(
  q: { since?: string; step?: string },
  now: number,
): HistoryWindow {
  const since = q.since ?? DEFAULT_SINCE;
  const sinceMs = durationMs(since);
  if (sinceMs === null || sinceMs <= 0) {
    throw ValidationError.field("since", `"${since}" is not a duration like 15m, 1h, 7d`);
  }
  if (sinceMs > spanMs(COARSE)) throw ValidationError.field("since", "at most 30d of history");
  const ring = sinceMs <= spanMs(FINE) ? FINE : COARSE;
  const step = q.step ?? defaultStep(sinceMs, ring);
  if (!(STEPS as readonly string[]).includes(step)) {
    throw ValidationError.field("step", `"${step}" is not one of ${STEPS.join(", ")}`);
  }
  const stepMs = durationMs(step)!;
  if (stepMs < ring.stepMs) {
    throw ValidationError.field(
      "step",
      `at least ${ring.stepMs / 60_000}m for a window beyond 24h (since=${since})`,
    );
  }
  return { ring, from: now - sinceMs, to: now, stepMs, step: step as Step };
}

function defaultStep(sinceMs: number, ring: Ring): Step {
  return STEPS.find((s) => {
    const ms = durationMs(s)!;
    return ms >= ring.stepMs && sinceMs / ms <= DEFAULT_POINTS;
  }) ?? STEPS[STEPS.length - 1];
}
