/**
 * The one shape every repeated measurement takes in `bench/results/*.json`, so
 * `deno task bench:report` can render any benchmark's figures the same way.
 *
 * A {@linkcode Figure} summarizes `n` values (repetitions, or samples): their
 * median and their spread. A tail percentile is recorded only when the sample
 * can support it: the 99th percentile of 20 values is just their maximum, so
 * below {@linkcode MIN_SAMPLES_FOR_P99} values there is no `p99` and readers
 * see "max" instead.
 */

import { percentile } from "./stats.ts";

/** Median and spread of `n` values; `p99` only when `n ≥ MIN_SAMPLES_FOR_P99`. */
export interface Figure {
  median: number;
  min: number;
  max: number;
  n: number;
  p99?: number;
}

/** Below this many values a "p99" would be the maximum under another name. */
export const MIN_SAMPLES_FOR_P99 = 100;

/**
 * Summarizes `values` (any order) as a {@linkcode Figure}, rounded to `digits`.
 *
 * @throws {RangeError} when `values` is empty: there is no figure to report.
 */
export function figure(values: readonly number[], digits = 3): Figure {
  if (values.length === 0) throw new RangeError("a figure needs at least one value");
  const sorted = Float64Array.from(values).sort();
  const summary: Figure = {
    median: round(median(sorted), digits),
    min: round(sorted[0], digits),
    max: round(sorted[sorted.length - 1], digits),
    n: sorted.length,
  };
  if (sorted.length >= MIN_SAMPLES_FOR_P99) summary.p99 = round(percentile(sorted, 99), digits);
  return summary;
}

/** Median of an ascending-sorted sample (mean of the middle two when even). */
function median(sorted: ArrayLike<number>): number {
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** True for any value shaped like a {@linkcode Figure} (how the report finds them in JSON). */
export function isFigure(value: unknown): value is Figure {
  if (typeof value !== "object" || value === null) return false;
  // JSON has no NaN: an empty figure's median, min and max come back as null.
  const f = value as Record<string, unknown>;
  const numberOrNull = (key: string) => typeof f[key] === "number" || f[key] === null;
  return typeof f.n === "number" && ["median", "min", "max"].every(numberOrNull);
}

/** Rounds to `digits` decimals, leaving non-finite values alone. */
export function round(value: number, digits: number): number {
  if (!Number.isFinite(value)) return value;
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
