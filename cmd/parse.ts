/**
 * Commander parsers for flag values. Each throws commander's InvalidArgumentError, which main.ts
 * turns into a usage error (exit 2) naming the flag; sizes and durations go through core/units.ts,
 * the parser the API uses for the same spellings.
 *
 * @module
 */
import { InvalidArgumentError } from "commander";
import { DURATION_HINT, parseDuration, parseSize, SIZE_HINT } from "../core/units.ts";

/** A positive integer (`--cpus 2`). */
export function positiveInt(text: string): number {
  const n = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || n < 1) {
    throw new InvalidArgumentError("must be a positive integer");
  }
  return n;
}

/** Any integer, negative too (`--ha-priority -5`); `abc` is refused, never sent as null. */
export function integer(text: string): number {
  if (!/^[+-]?\d+$/.test(text.trim())) {
    throw new InvalidArgumentError(`"${text}" is not an integer`);
  }
  return Number(text.trim());
}

/** Zero or a positive integer (`--ha-max-restarts 0`). */
export function nonNegativeInt(text: string): number {
  if (!/^\d+$/.test(text.trim())) {
    throw new InvalidArgumentError(`"${text}" is not a whole number >= 0`);
  }
  return Number(text.trim());
}

/** A size in bytes: `1.5G`, `512M`, `10G`; a bare number is bytes. */
export function sizeBytes(text: string): number {
  const n = parseSize(text);
  if (n === undefined || n <= 0) throw new InvalidArgumentError(`"${text}" is not ${SIZE_HINT}`);
  return n;
}

/** A size in MiB (memory): `1.5G` is 1536; a bare number is MiB. */
export function sizeMiB(text: string): number {
  const bytes = parseSize(text, "M");
  if (bytes === undefined || bytes <= 0) {
    throw new InvalidArgumentError(`"${text}" is not ${SIZE_HINT}`);
  }
  const mib = bytes / 2 ** 20;
  if (!Number.isInteger(mib)) {
    throw new InvalidArgumentError(`"${text}" is not a whole number of MiB`);
  }
  return mib;
}

/** A size in GiB (disks, which the API takes in whole GiB): `10G`, `1T`; a bare number is GiB. */
export function sizeGiB(text: string): number {
  const bytes = parseSize(text, "G");
  if (bytes === undefined || bytes <= 0) {
    throw new InvalidArgumentError(`"${text}" is not ${SIZE_HINT}`);
  }
  const gib = bytes / 2 ** 30;
  if (!Number.isInteger(gib)) {
    throw new InvalidArgumentError(`"${text}" is not a whole number of GiB`);
  }
  return gib;
}

/** A duration in whole seconds, rounded up (`--timeout 5m`); a bare number is seconds. */
export function durationSeconds(text: string): number {
  const ms = parseDuration(text, "s");
  if (ms === undefined || ms <= 0) {
    throw new InvalidArgumentError(`"${text}" is not ${DURATION_HINT}`);
  }
  return Math.ceil(ms / 1000);
}

/**
 * A duration the server parses itself (`--ttl 30d`): checked here so that a typo is a usage error,
 * and sent as typed.
 */
export function durationText(text: string): string {
  if (parseDuration(text, "s") === undefined) {
    throw new InvalidArgumentError(`"${text}" is not ${DURATION_HINT}`);
  }
  return text.trim();
}
