/** Latency statistics for load-generator samples (all values in milliseconds). */

export interface LatencySummary {
  count: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Nearest-rank percentile of an ascending-sorted sample; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

export function summarize(samplesMs: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(samplesMs).sort();
  let total = 0;
  for (const sample of sorted) total += sample;
  return {
    count: sorted.length,
    meanMs: sorted.length ? total / sorted.length : NaN,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    maxMs: sorted.length ? sorted[sorted.length - 1] : NaN,
  };
}

/**
 * A figure measured several times, as every benchmark result stores it: the median (the mean of
 * the two middle samples when n is even), the extremes and the sample count. Small samples have
 * no tail percentiles worth the name, so none are given: `max` is what the worst run took.
 */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** The `Spread` of `samples`, rounded to `digits` decimals; all NaN (n 0) when empty. */
export function spread(samples: ArrayLike<number>, digits = 1): Spread {
  const sorted = Float64Array.from(samples).sort();
  const n = sorted.length;
  const round = (x: number) => Math.round(x * 10 ** digits) / 10 ** digits;
  if (n === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const middle = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  return { median: round(middle), min: round(sorted[0]), max: round(sorted[n - 1]), n };
}
