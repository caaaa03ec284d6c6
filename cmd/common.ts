/**
 * The client flags (`--server`, `--token`, `--ca`, `-o`, `--context`, ...), defined once on the
 * root program so that they stand before or after the subcommand, and how they become an
 * ApiClient: a flag beats its environment variable, which beats the current context (contexts.ts).
 *
 * @module
 */
import { type Command, Option } from "commander";
import { ApiClient } from "./client.ts";
import { processTrustDeps } from "./trust.ts";
import { configureOutput, type Format, OUTPUT_FORMATS } from "./output.ts";
import { DEFAULT_SERVER, type Target, targetOf } from "./contexts.ts";

import { durationSeconds, positiveInt } from "./parse.ts";

export { positiveInt } from "./parse.ts";
export { DEFAULT_SERVER };

/** The global flags as every action sees them (copied in by {@link applyGlobalOptions}). */
export interface GlobalOpts {
  /** A flag's or NOVACTL_SERVER's URL; undefined leaves the choice to the context. */
  server?: string;
  token?: string;
  /** The cluster CA certificate file (a node's DIR/ca.crt) to verify https servers with. */
  ca?: string;
  /** The SHA-256 of the cluster CA to pin on first use, instead of asking (see trust.ts). */
  caFingerprint?: string;
  /** The context to use instead of the current one (`--context`, env NOVACTL_CONTEXT). */
  context?: string;
  output: Format;
  /** False with `--no-headers`. */
  headers: boolean;
  /** `-q`: names only. */
  quiet?: boolean;
}

/** Attribute names of the global options, in the order `--help` lists them. */
const GLOBAL_KEYS = [
  "server",
  "token",
  "ca",
  "caFingerprint",
  "context",
  "output",
  "headers",
  "quiet",
] as const;

/** The one definition of the global flags, added to the root program by main.ts. */
export function globalOptions(): Option[] {
  return [
    new Option("--server <url>", `API server URL (default: the context's, else ${DEFAULT_SERVER})`)
      .env("NOVACTL_SERVER"),
    new Option("--token <token>", "API token").env("NOVACTL_TOKEN"),
    new Option("--ca <file>", "cluster CA certificate (a node's DATA_DIR/ca.crt)").env(
      "NOVACTL_CA",
    ),
    new Option(
      "--ca-fingerprint <sha256>",
      "pin the server's cluster CA on first use if its SHA-256 fingerprint is this",
    ).env("NOVACTL_CA_FINGERPRINT"),
    new Option("--context <name>", "use this context instead of the current one").env(
      "NOVACTL_CONTEXT",
    ),
    new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("table"),
    new Option("--no-headers", "tables without their header line"),
    new Option("-q, --quiet", "print only the names of what a command lists or shows"),
  ];
}

/**
 * Copies the root's global option values into the command about to run, so that its action's
 * `opts` carry them as if the command had declared them. A command that declares an option of
 * the same name for another purpose (`node start --token JOINTOKEN`) gets only what was typed on
 * the command line: the API token's environment variable is not a join token.
 */
export function applyGlobalOptions(root: Command, action: Command): void {
  for (const key of GLOBAL_KEYS) {
    const source = root.getOptionValueSource(key);
    const own = action !== root && action.options.some((o) => o.attributeName() === key);
    if (own && source !== "cli") continue;
    if (source === undefined && root.getOptionValue(key) === undefined) continue;
    action.setOptionValueWithSource(key, root.getOptionValue(key), source ?? "default");
  }
  // A context named by a flag outranks the environment's server and token (see targetOf).
  const typed = GLOBAL_KEYS.filter((k) => root.getOptionValueSource(k) === "cli");
  action.setOptionValue("typedGlobals", typed);
  const opts = root.opts() as GlobalOpts;
  configureOutput({ headers: opts.headers !== false, quiet: opts.quiet === true });
}

/**
 * `--wait`, `--no-wait` and `--timeout DURATION`, the same on every command that starts something
 * long: commands that return an operation wait by default (`--no-wait` returns it at once), VM
 * state changes return at once unless `--wait`; either way `--timeout` bounds the wait and a
 * wait that runs out exits 1.
 */
export function withWaitOptions(
  cmd: Command,
  opts: { byDefault: boolean; timeoutSeconds: number; until: string },
): Command {
  return cmd
    .addOption(
      new Option("--wait", `wait until ${opts.until}`).default(opts.byDefault),
    )
    .addOption(new Option("--no-wait", `return at once${opts.byDefault ? "" : " (the default)"}`))
    .addOption(
      new Option("--timeout <duration>", "how long to wait, e.g. 90s, 5m, 1h")
        .argParser(durationSeconds).default(opts.timeoutSeconds, `${opts.timeoutSeconds}s`),
    );
}

/** The options of a list command: `--limit`. */
export type ListOpts = GlobalOpts & { limit?: number };

/**
 * `--limit N` on a list command: at most N items. Without it a list command fetches every
 * page (ApiClient.list), so scripts always get the complete list.
 */
export function withListLimit(cmd: Command): Command {
  return cmd.option(
    "--limit <n>",
    "at most this many (default: all of them, fetched page by page)",
    positiveInt,
  );
}

/**
 * The client flags used to be added to each command here; they are the root's now
 * ({@link globalOptions}), so this returns the command as it is.
 *
 * @deprecated kept so that branches in flight, which still wrap their commands, merge cleanly
 */
export function withClientOptions(cmd: Command): Command {
  return cmd;
}

/** Where a command's options send requests: flags, environment and contexts resolved. */
export function targetOfOpts(opts: GlobalOpts): Target {
  return targetOf(opts, new Set((opts as { typedGlobals?: string[] }).typedGlobals ?? []));
}

/**
 * The API client for a command's options. Without a CA file, an https server is verified with
 * the CA pinned for it, pinned on first use after a confirmation (see trust.ts).
 */
export function clientOf(opts: GlobalOpts): ApiClient {
  const t = targetOfOpts(opts);
  return new ApiClient({
    server: t.server,
    token: t.token,
    ca: t.ca,
    caFingerprint: opts.caFingerprint,
    trust: processTrustDeps,
  });
}
