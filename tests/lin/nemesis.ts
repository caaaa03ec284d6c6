/**
 * Faults for a real cluster whose nodes live in their own network namespaces: links
 * cut on the bridge with nftables (one way or both), bridge ports set down, processes
 * SIGKILLed and restarted or SIGSTOPped and continued, against the leader and against
 * followers alike. Each fault returns how to undo it.
 */
import type { NovactlCluster } from "../../bench/lib/novactl_cluster.ts";
import type { NetworkLab } from "../../bench/lib/netns.ts";

export interface NemesisContext {
  cluster: NovactlCluster;
  lab: NetworkLab;
  leader: string;
  followers: string[];
  /** Uniform in [0, 1): the nemesis's seeded random source. */
  random: () => number;
}

export interface InjectedFault {
  /** What was done, e.g. `n1 -/-> n2, n3`. */
  what: string;
  /** Whether clients' requests may cross a cut or downed link meanwhile. */
  network: boolean;
  undo(): Promise<void>;
}

type Inject = (ctx: NemesisContext) => Promise<InjectedFault>;

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

function isolate(ctx: NemesisContext, victim: string): Promise<InjectedFault> {
  const others = [ctx.leader, ...ctx.followers].filter((n) => n !== victim);
  return ctx.lab.partition([victim], others).then(() => ({
    what: `${victim} <-/-> ${others.join(", ")}`,
    network: true,
    undo: () => ctx.lab.heal(),
  }));
}

async function cutEach(ctx: NemesisContext, pairs: [string, string][]): Promise<InjectedFault> {
  for (const [from, to] of pairs) await ctx.lab.cut(from, to);
  return {
    what: pairs.map(([from, to]) => `${from} -/-> ${to}`).join(", "),
    network: true,
    undo: () => ctx.lab.heal(),
  };
}

async function kill(ctx: NemesisContext, victim: string): Promise<InjectedFault> {
  await ctx.cluster.kill(victim, "SIGKILL");
  return { what: `SIGKILL ${victim}`, network: false, undo: () => ctx.cluster.restart(victim) };
}

async function pause(ctx: NemesisContext, victim: string): Promise<InjectedFault> {
  await ctx.cluster.kill(victim, "SIGSTOP");
  return {
    what: `SIGSTOP ${victim}`,
    network: false,
    undo: () => ctx.cluster.kill(victim, "SIGCONT"),
  };
}

/**
 * Every fault the nemesis knows. A one-way cut `a -/-> b` loses a's requests to b
 * (Raft messages and forwarded client requests) while b's requests to a still arrive.
 */
export const FAULTS = {
  "isolate leader": (ctx) => isolate(ctx, ctx.leader),
  "isolate follower": (ctx) => isolate(ctx, pick(ctx.random, ctx.followers)),
  /** The leader's appends and heartbeats are lost; it still hears the followers. */
  "leader cannot send": (ctx) => cutEach(ctx, ctx.followers.map((f) => [ctx.leader, f])),
  /** The followers' answers (and forwarded requests) are lost; heartbeats still arrive. */
  "leader cannot hear": (ctx) => cutEach(ctx, ctx.followers.map((f) => [f, ctx.leader])),
  "one-way cut": (ctx) => {
    const from = pick(ctx.random, [ctx.leader, ...ctx.followers]);
    const to = pick(ctx.random, [ctx.leader, ...ctx.followers].filter((n) => n !== from));
    return cutEach(ctx, [[from, to]]);
  },
  "link down": async (ctx) => {
    const victim = pick(ctx.random, [ctx.leader, ...ctx.followers]);
    await ctx.lab.setLink(victim, false);
    return { what: `${victim} link down`, network: true, undo: () => ctx.lab.heal() };
  },
  "kill leader": (ctx) => kill(ctx, ctx.leader),
  "kill follower": (ctx) => kill(ctx, pick(ctx.random, ctx.followers)),
  "pause leader": (ctx) => pause(ctx, ctx.leader),
  "pause follower": (ctx) => pause(ctx, pick(ctx.random, ctx.followers)),
} satisfies Record<string, Inject>;

export type FaultKind = keyof typeof FAULTS;

export const FAULT_KINDS = Object.keys(FAULTS) as FaultKind[];

/** A seeded uniform random source, so a run's choices can be replayed. */
export { mulberry32 as seededRandom } from "../../core/raft/testing.ts";
