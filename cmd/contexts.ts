/**
 * Contexts: named clusters (server, token file, CA) in `$XDG_CONFIG_HOME/novactl/config.yaml`
 * (else `~/.config/...`, mode 0600), one of them current, as kubectl's kubeconfig does it.
 *
 * Where a command goes: `--server`/`--token`/`--ca` flags first, then NOVACTL_SERVER/_TOKEN/_CA,
 * then the context (`--context NAME`, NOVACTL_CONTEXT, else the current one), then the default
 * server. A context named by `--context` on the command line outranks the environment: typing it
 * is the more specific wish.
 *
 * @module
 */
import { dirname, isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { z } from "zod";
import { NovaError, ValidationError } from "../core/errors/mod.ts";

/** One context as stored (paths absolute, so that it works from any directory). */
export interface Context {
  name: string;
  server: string;
  /** A file holding the API token, read at each use (so a rotated token needs no edit here). */
  "token-file"?: string;
  /** The cluster CA certificate file. */
  ca?: string;
}

/** The whole config file. */
export interface CliConfig {
  "current-context"?: string;
  contexts: Context[];
}

const CONTEXT = z.object({
  name: z.string().min(1),
  server: z.string().url(),
  "token-file": z.string().optional(),
  ca: z.string().optional(),
}).strict();

const CONFIG = z.object({
  "current-context": z.string().optional(),
  contexts: z.array(CONTEXT).default([]),
}).strict();

/** Where the config lives: `$XDG_CONFIG_HOME/novactl/config.yaml`, else under `~/.config`. */
export function configPath(
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): string {
  const home = env("HOME");
  const base = env("XDG_CONFIG_HOME") || (home ? join(home, ".config") : undefined);
  if (!base) throw new ValidationError("neither XDG_CONFIG_HOME nor HOME is set: no config file");
  return join(base, "novactl", "config.yaml");
}

/**
 * Reads the config; a missing file is an empty config.
 *
 * @throws ValidationError naming the file and the field when it does not parse
 */
export function loadConfig(file = configPath()): CliConfig {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { contexts: [] };
    throw new ValidationError(`cannot read ${file}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (err) {
    throw new ValidationError(`${file} is not YAML: ${(err as Error).message}`);
  }
  const r = CONFIG.safeParse(doc);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new ValidationError(`${file}: ${i.path.join(".") || "(top)"}: ${i.message}`);
  }
  return r.data;
}

/** Writes the config readable by its owner only (it names token files and servers). */
export function saveConfig(config: CliConfig, file = configPath()): void {
  const dir = dirname(file);
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${crypto.randomUUID()}`;
  Deno.writeTextFileSync(tmp, toYaml(config), { mode: 0o600 });
  Deno.chmodSync(tmp, 0o600);
  Deno.renameSync(tmp, file);
}

/** A context by name, or a usage error listing the ones there are. */
export function findContext(config: CliConfig, name: string): Context {
  const ctx = config.contexts.find((c) => c.name === name);
  if (!ctx) {
    const names = config.contexts.map((c) => c.name);
    throw new NovaError(
      "usage",
      `no context "${name}" (${names.length ? `contexts: ${names.join(", ")}` : "none defined"}; ` +
        `add one with novactl context add)`,
    );
  }
  return ctx;
}

/** An absolute path for a file given relative to the working directory. */
export function absolute(file: string): string {
  return isAbsolute(file) ? file : resolve(Deno.cwd(), file);
}

/** Where requests go, and with which token and CA. */
export interface Target {
  server: string;
  token?: string;
  ca?: string;
  /** The context used, if any. */
  context?: string;
}

/** Nodes serve HTTPS by default (plain HTTP only with --insecure-http). */
export const DEFAULT_SERVER = "https://127.0.0.1:7070";

function readToken(ctx: Context): string | undefined {
  const file = ctx["token-file"];
  if (!file) return undefined;
  try {
    return Deno.readTextFileSync(file).trim().split("\n").pop()!.trim();
  } catch (err) {
    throw new ValidationError(
      `context ${ctx.name}: cannot read its token file ${file}: ${(err as Error).message}`,
    );
  }
}

/**
 * Resolves flags (and their environment variables, which commander already merged) against the
 * contexts. `typed` names the global flags typed on the command line: a typed `--context` beats
 * the environment's server, token and CA.
 */
export function targetOf(
  opts: { server?: string; token?: string; ca?: string; context?: string },
  typed: ReadonlySet<string>,
  file?: string,
): Target {
  const given = { server: opts.server, token: opts.token, ca: opts.ca };
  // Skip the file entirely when nothing could come from it (scripts with --server and --token).
  if (!opts.context && given.server && given.token) {
    return { server: given.server, token: given.token, ca: given.ca };
  }
  const config = loadConfig(file ?? configPath());
  const name = opts.context ?? config["current-context"];
  const ctx = name ? findContext(config, name) : undefined;
  if (!ctx) return { ...given, server: given.server ?? DEFAULT_SERVER };
  const fromCtx = { server: ctx.server, token: readToken(ctx), ca: ctx.ca };
  if (typed.has("context")) {
    const flag = (k: "server" | "token" | "ca") => typed.has(k) ? given[k] : undefined;
    return {
      server: flag("server") ?? fromCtx.server,
      token: flag("token") ?? fromCtx.token,
      ca: flag("ca") ?? fromCtx.ca,
      context: ctx.name,
    };
  }
  // A server from a flag or the environment is another cluster: the context's token and CA
  // belong to the context's server, so they are not sent elsewhere.
  if (given.server && given.server !== ctx.server) {
    return { server: given.server, token: given.token, ca: given.ca };
  }
  return {
    server: fromCtx.server,
    token: given.token ?? fromCtx.token,
    ca: given.ca ?? fromCtx.ca,
    context: ctx.name,
  };
}
