/**
 * The node config file, `novactl node start --config FILE` (or env NOVACTL_NODE_CONFIG): a
 * YAML mapping whose keys are `node start`'s flag names without the dashes, e.g.
 *
 * ```yaml
 * name: n1
 * data-dir: /var/lib/novactl
 * listen: 0.0.0.0:7070
 * label: { rack: r1 }
 * ```
 *
 * It is checked strictly: an unknown key or a value of the wrong kind is refused, naming the
 * file and the key. Flags given on the command line override the file's values (labels merge,
 * the flag's value winning per key).
 *
 * @module
 */
import type { Command } from "commander";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ValidationError } from "../core/errors/mod.ts";
import { LEVELS } from "../core/log/mod.ts";
import { parseCentralPorts } from "../host/ovs/mod.ts";

/** The environment variable naming the config file when `--config` is not given. */
export const NODE_CONFIG_ENV = "NOVACTL_NODE_CONFIG";

const text = z.string({ invalid_type_error: "expected a string" }).min(1, "must not be empty");
const count = z.number({ invalid_type_error: "expected a number" }).int("expected an integer")
  .positive("must be positive");
const flag = z.boolean({ invalid_type_error: "expected true or false" });

/** Every `node start` flag but `--config`, by its name (node_config_test.ts checks the match). */
export const nodeConfigSchema = z.object({
  "name": text,
  "data-dir": text,
  "listen": text,
  "advertise": text.url("expected a URL"),
  "join": text.url("expected a URL"),
  "token": text,
  "token-file": text,
  "restore": text,
  "insecure-http": flag,
  "label": z.record(z.string(), z.string({ invalid_type_error: "expected a string" }), {
    invalid_type_error: "expected a mapping of label keys to values",
  }),
  "grpc-port": z.number({ invalid_type_error: "expected a port number" }).int("expected an integer")
    .min(0, "expected a port number (0-65535)").max(65535, "expected a port number (0-65535)"),
  "simulated-host": flag,
  "simulated-cpus": count,
  "simulated-memory": count,
  "networking": z.union([flag, z.enum(["on", "off"])], {
    errorMap: () => ({ message: "expected on or off" }),
  }).transform((v) => v === true || v === "on"),
  "tunnel-interface": text,
  "ovn-ports": text.transform((v, ctx) => {
    const ports = parseCentralPorts(v);
    if (!ports) {
      ctx.addIssue({ code: "custom", message: `"${v}" is not four ports NB,SB,NBRAFT,SBRAFT` });
      return z.NEVER;
    }
    return ports;
  }),
  "log-level": z.enum(LEVELS as [string, ...string[]], {
    errorMap: () => ({ message: `expected one of ${LEVELS.join(", ")}` }),
  }),
}).partial().strict();

export type NodeConfig = z.output<typeof nodeConfigSchema>;

/** `data-dir` → `dataDir`: the name commander gives the flag's value. */
export function attributeOf(key: string): string {
  return key.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

const KEYS = Object.keys(nodeConfigSchema.shape);

/** Checks a config file's text; `file` names it in every error. */
export function parseNodeConfig(source: string, file: string): NodeConfig {
  let raw: unknown;
  try {
    raw = parseYaml(source);
  } catch (err) {
    throw ValidationError.field(file, `not YAML: ${(err as Error).message}`);
  }
  raw ??= {}; // an empty file sets nothing
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw ValidationError.field(file, "expected a mapping of option names to values");
  }
  const parsed = nodeConfigSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.flatMap((i) =>
    i.code === "unrecognized_keys"
      ? i.keys.map((k) => ({ field: `${file}: ${k}`, message: unknownKey(k) }))
      : [{ field: `${file}: ${i.path.join(".")}`, message: i.message }]
  );
  throw new ValidationError(issues.map((i) => `${i.field}: ${i.message}`).join("; "), issues);
}

function unknownKey(key: string): string {
  const kebab = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/_/g, "-");
  const hint = kebab !== key && KEYS.includes(kebab)
    ? `did you mean "${kebab}"?`
    : `known keys: ${KEYS.join(", ")}`;
  return `unknown key "${key}" (${hint})`;
}

/** Reads and checks the config file. */
export async function readNodeConfig(file: string): Promise<NodeConfig> {
  let source: string;
  try {
    source = await Deno.readTextFile(file);
  } catch (err) {
    throw ValidationError.field("config", `cannot read ${file}: ${(err as Error).message}`);
  }
  return parseNodeConfig(source, file);
}

/**
 * `cmd`'s option values with the file's filled in wherever the command line gave none
 * (a value from commander's defaults counts as none). Labels merge, the flag's winning.
 */
export function withNodeConfig(
  cmd: Command,
  opts: Record<string, unknown>,
  config: NodeConfig,
): Record<string, unknown> {
  const merged = { ...opts };
  for (const [key, value] of Object.entries(config)) {
    const attr = attributeOf(key);
    const fromCli = cmd.getOptionValueSource(attr) === "cli";
    if (key === "label") {
      merged.label = {
        ...(value as Record<string, string>),
        ...(fromCli ? opts.label as object : {}),
      };
    } else if (!fromCli) {
      merged[attr] = value;
    }
  }
  return merged;
}
