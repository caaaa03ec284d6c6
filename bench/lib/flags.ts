/** Command-line flags shared by the load benchmarks: `--name value`, `--name=value`, booleans. */

/** Parses `--name value`, `--name=value` and the given boolean flags (`--keep`). */
export function parseFlags(args: string[], booleans: ReadonlySet<string>): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const match = args[i].match(/^--([\w-]+)(?:=(.*))?$/);
    if (!match) throw new Error(`unexpected argument "${args[i]}"`);
    const [, name, inline] = match;
    if (inline !== undefined || booleans.has(name)) flags.set(name, inline ?? "true");
    else if (i + 1 < args.length) flags.set(name, args[++i]);
    else throw new Error(`--${name} needs a value`);
  }
  return flags;
}

export function positiveNumber(flags: Map<string, string>, name: string, fallback: number): number {
  const value = Number(flags.get(name) ?? fallback);
  if (!(value > 0)) throw new Error(`--${name} must be a positive number`);
  return value;
}

export function nonNegativeNumber(
  flags: Map<string, string>,
  name: string,
  fallback: number,
): number {
  const value = Number(flags.get(name) ?? fallback);
  if (!(value >= 0)) throw new Error(`--${name} must be a non-negative number`);
  return value;
}

export function toPositiveInt(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`--${name}: "${text}" is not a positive integer`);
  }
  return value;
}

/** `--clients 1,16,64` as numbers. */
export function clientList(flags: Map<string, string>, fallback: string): number[] {
  return (flags.get("clients") ?? fallback).split(",").map((c) => toPositiveInt("clients", c));
}
