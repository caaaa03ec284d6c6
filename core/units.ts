/**
 * Sizes (`1.5G`, `512M`) and durations (`30m`, `1h`, `90s`) as people type them, parsed the same
 * way by the CLI's flags and the API's text fields, so one spelling works everywhere.
 *
 * @module
 */

const SIZE_SHIFT: Record<string, number> = { "": 0, K: 10, M: 20, G: 30, T: 40, P: 50 };

/**
 * Parses a size into bytes: a number with an optional binary unit K, M, G, T or P (`Ki`, `KiB`
 * and `KB` mean the same: 1024-based, as qemu-img reads them), or `defaultUnit` without one.
 *
 * @param text e.g. `1.5G`, `512M`, `10GiB`, `4096`
 * @param defaultUnit the unit of a bare number ("" for bytes)
 * @returns whole bytes, or undefined when `text` is not a size
 * @example parseSize("1.5G") === 1.5 * 2 ** 30
 */
export function parseSize(text: string, defaultUnit = ""): number | undefined {
  const m = /^(\d+(?:\.\d+)?|\.\d+)\s*([KMGTP]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) return undefined;
  const unit = (m[2] || defaultUnit).toUpperCase();
  const shift = SIZE_SHIFT[unit];
  if (shift === undefined) return undefined;
  const bytes = Number(m[1]) * 2 ** shift;
  return Number.isFinite(bytes) ? Math.round(bytes) : undefined;
}

const DURATION_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/**
 * Parses a duration into milliseconds: a number with a unit ms, s, m, h or d, several of them
 * summed (`1h30m`), or `defaultUnit` for a bare number.
 *
 * @param text e.g. `90s`, `30m`, `1.5h`, `1h30m`, `500ms`, `120`
 * @param defaultUnit the unit of a bare number
 * @returns whole milliseconds, or undefined when `text` is not a duration
 * @example parseDuration("1h30m") === 5_400_000
 */
export function parseDuration(
  text: string,
  defaultUnit: "ms" | "s" | "m" | "h" | "d" = "s",
): number | undefined {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * DURATION_MS[defaultUnit]);
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(t)) return undefined;
  let ms = 0;
  for (const part of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) {
    ms += Number(part[1]) * DURATION_MS[part[2]];
  }
  return Math.round(ms);
}

/** What a size flag takes, for messages. */
export const SIZE_HINT = "a size like 512M, 1.5G or 10G";
/** What a duration flag takes, for messages. */
export const DURATION_HINT = "a duration like 90s, 30m, 1h or 1h30m";
