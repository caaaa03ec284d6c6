/**
 * The per-host outcome of one decision, kept as two typed arrays. Building
 * `scores` and `reasons` records of a thousand hosts costs twice as much as
 * the decision itself, and only `--dry-run` and failures read them, so a
 * successful result materialises them on first access.
 */

/** Which filter rejected a host, or that it passed and was scored. */
export const Verdict = {
  notCandidate: 0,
  scored: 1,
  excluded: 2,
  /** State or inventory: fixed for the life of the index. */
  fixed: 3,
  /** Figure: the position of the broken constraint. */
  label: 4,
  group: 5,
  /** Figure for memory, cpu and disk: the amount that was free. */
  memory: 6,
  cpu: 7,
  disk: 8,
  /** Figure: the position of the pool rule that failed. */
  pool: 9,
} as const;
export type Verdict = typeof Verdict[keyof typeof Verdict];

/** Writes the reason for a rejected host from its verdict and figure. */
export type Describe = (host: number, verdict: Verdict, figure: number) => string;

export class Verdicts {
  private readonly verdict: Uint8Array;
  /** The score of a scored host; what the rejecting filter saw otherwise. */
  private readonly figure: Float64Array;

  constructor(hosts: number) {
    this.verdict = new Uint8Array(hosts);
    this.figure = new Float64Array(hosts);
  }

  /** Always false, so a filter can `return verdicts.reject(...)`. */
  reject(host: number, verdict: Verdict, figure: number): false {
    this.verdict[host] = verdict;
    this.figure[host] = figure;
    return false;
  }

  scored(host: number, score: number): void {
    this.verdict[host] = Verdict.scored;
    this.figure[host] = score;
  }

  scores(names: readonly string[]): Record<string, number> {
    const scores: Record<string, number> = {};
    for (let i = 0; i < names.length; i++) {
      // Two decimals are plenty to read and keep `--dry-run` output stable.
      if (this.verdict[i] === Verdict.scored) {
        scores[names[i]] = Math.round(this.figure[i] * 100) / 100;
      }
    }
    return scores;
  }

  reasons(names: readonly string[], describe: Describe): Record<string, string> {
    const reasons: Record<string, string> = {};
    for (let i = 0; i < names.length; i++) {
      const verdict = this.verdict[i] as Verdict;
      if (verdict > Verdict.scored) reasons[names[i]] = describe(i, verdict, this.figure[i]);
    }
    return reasons;
  }
}

/**
 * Defines `target[key]` as an enumerable property computed on first read, so
 * it still shows in JSON, spreads and deep equality. Assigning replaces it.
 */
export function lazyField<T extends object, K extends keyof T>(
  target: T,
  key: K,
  build: () => T[K],
): void {
  const settle = (value: T[K]) => {
    Object.defineProperty(target, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
    return value;
  };
  Object.defineProperty(target, key, {
    enumerable: true,
    configurable: true,
    get: () => settle(build()),
    set: settle,
  });
}
