/**
 * `novactl node simulate-hosts`: SIMULATION for scale tests. Runs `--count` simulated
 * hosts (see host/simulated_host.ts) as members of one cluster inside this one process.
 *
 * Each is a whole member as `node start --simulated-host` makes it: its own data dir
 * (`DATA_DIR/NAME`), identity and certificate, Raft learner with its own log and state
 * database, HTTPS listener, lease renewals, inventory and reports. What they share is the
 * process: one runtime instead of one per host, which is what lets one small machine
 * put hundreds of hosts' worth of peer traffic on a real control plane. Nothing here
 * runs a guest.
 *
 * @module
 */
import { join } from "node:path";
import { ValidationError } from "../core/errors/mod.ts";
import { flushLogs, log, setLogContext } from "../core/log/mod.ts";
import { keepMemoryTrimmed } from "../core/memory/mod.ts";
import { readIdentity } from "../core/store/mod.ts";
import type { SimulatedHardware } from "../host/mod.ts";
import { openMember, parseListen, type RunningMember } from "./node_start.ts";

export interface SimulateHostsOptions {
  count: number;
  /** Members are named PREFIX1 … PREFIXcount. */
  namePrefix: string;
  /** Each member's data dir is DATA_DIR/NAME. */
  dataDir: string;
  /** The address every member listens on, each on a port of its own. */
  listenHost: string;
  join?: string;
  /** Join tokens, one per line, one for each member that has not joined yet (they are single-use). */
  tokenFile?: string;
  insecureHttp?: boolean;
  hardware: SimulatedHardware;
  /** Members joining at the same time. */
  parallel: number;
}

/** Names of the members, in order. */
export function memberNames(prefix: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}${i + 1}`);
}

/** The tokens in `file`, one per line; as many as the members that still have to join. */
async function readJoinTokens(file: string | undefined, needed: number): Promise<string[]> {
  if (needed === 0) return [];
  if (!file) {
    throw ValidationError.field("token-file", `${needed} members must join: one token per line`);
  }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    throw ValidationError.field("token-file", `cannot read ${file}: ${(err as Error).message}`);
  }
  const tokens = text.split("\n").map((l) => l.trim()).filter((l) => l.length > 0);
  if (tokens.length < needed) {
    throw ValidationError.field(
      "token-file",
      `holds ${tokens.length} join tokens; ${needed} members must join (tokens are single-use)`,
    );
  }
  return tokens;
}

/** Opens every member, `parallel` at a time; stops those already open if one fails. */
export async function openSimulatedHosts(opts: SimulateHostsOptions): Promise<RunningMember[]> {
  parseListen(`${opts.listenHost}:0`);
  const names = memberNames(opts.namePrefix, opts.count);
  const joined = await Promise.all(
    names.map(async (name) => (await readIdentity(join(opts.dataDir, name))) !== null),
  );
  const tokens = await readJoinTokens(opts.tokenFile, joined.filter((j) => !j).length);
  if (tokens.length && !opts.join) {
    throw ValidationError.field("join", "members that have not joined yet need --join URL");
  }
  await Deno.mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  const members: RunningMember[] = [];
  const queue = names.map((name, i) => ({ name, token: joined[i] ? undefined : tokens.shift() }));
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      members.push(
        await openMember({
          name: next.name,
          dataDir: join(opts.dataDir, next.name),
          listen: `${opts.listenHost}:0`,
          join: next.token ? opts.join : undefined,
          token: next.token,
          insecureHttp: opts.insecureHttp,
          label: {},
          simulatedHost: opts.hardware,
        }),
      );
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, opts.parallel) }, worker));
  } catch (err) {
    queue.length = 0;
    await Promise.all(members.map((m) => m.stop("a sibling failed to start")));
    throw err;
  }
  return members;
}

export async function simulateHosts(opts: SimulateHostsOptions): Promise<void> {
  setLogContext({ simulatedHosts: `${opts.namePrefix}1..${opts.count}` });
  log.warn("SIMULATION: many simulated hosts in one process; none runs a guest", {
    count: opts.count,
  });
  const members = await openSimulatedHosts(opts);
  const stopTrimming = keepMemoryTrimmed();
  const stopAll = (reason: string) => Promise.all(members.map((m) => m.stop(reason)));
  Deno.addSignalListener("SIGTERM", () => void stopAll("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => void stopAll("SIGINT"));
  log.info("simulated hosts running", { members: members.map((m) => `${m.name} ${m.url}`) });
  // A removed member stops alone; the process ends with the last one.
  await Promise.all(members.map((m) => m.finished));
  stopTrimming();
  flushLogs();
  Deno.exit(0);
}
