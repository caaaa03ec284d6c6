/**
 * Rolling upgrades: the cluster level (see ./levels.ts for the contract) as the leader
 * enforces it.
 *
 * - {@link assertCommandAllowed}: every proposal passes here (ClusterNode.proposeIndexed);
 *   a command kind of a level above the cluster's is refused with `feature_unavailable`,
 *   naming the members that hold the level back.
 * - {@link Upgrader}: on the leader, proposes `cluster.upgrade` once every member reports
 *   a version that supports a higher level than the cluster runs at.
 * - {@link assertDataDirSupported}: a program refuses a data dir whose state is at a level
 *   above the one it supports (an older release started on a newer node's data).
 * - {@link assertJoinerSupported}: a node whose release cannot apply the cluster's level
 *   may not join it.
 */
import type { StateMachine } from "../fsm/mod.ts";
import { FeatureUnavailableError, NovaError } from "../errors/mod.ts";
import { log } from "../log/mod.ts";
import {
  isTracked,
  levelOfCommand,
  levelOfVersion,
  MAX_KNOWN_LEVEL,
  releaseOfLevel,
} from "./levels.ts";
import { PROGRAM_MAX_LEVEL, PROGRAM_VERSION } from "./program.ts";

export * from "./levels.ts";
export { PRETEND_RELEASE_ENV, PROGRAM_MAX_LEVEL, PROGRAM_VERSION } from "./program.ts";

/** A member as the level sees it: its reported version and the level that version supports. */
export interface MemberSupport {
  name: string;
  role: "voter" | "learner" | "host";
  /** The version it last reported (its inventory), null before it registered. */
  version: string | null;
  maxLevel: number;
}

/** What the level depends on: the Raft members and the hosts, as the replicated state has them. */
type Reads = Pick<StateMachine, "members" | "nodes" | "clusterLevel">;

/**
 * Every member (voters, learners) and every host, with the level its reported version
 * supports. A member that has not registered as a host yet reports nothing: level 1.
 */
export function memberSupport(fsm: Reads): MemberSupport[] {
  const versions = new Map(fsm.nodes().map((n) => [n.name, n.inventory?.version ?? null]));
  const out = new Map<string, MemberSupport>();
  for (const m of fsm.members()) {
    const version = versions.get(m.name) ?? null;
    out.set(m.name, { name: m.name, role: m.role, version, maxLevel: levelOfVersion(version) });
  }
  for (const [name, version] of versions) {
    if (out.has(name)) continue;
    out.set(name, { name, role: "host", version, maxLevel: levelOfVersion(version) });
  }
  return [...out.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The level the cluster may run at: the lowest any member supports, and never above what
 * this program (the leader's) can apply.
 */
export function supportedLevel(members: MemberSupport[]): number {
  return Math.min(PROGRAM_MAX_LEVEL, ...members.map((m) => m.maxLevel));
}

function describe(members: MemberSupport[]): string {
  return members.map((m) => `${m.name} (${m.role}, ${m.version ?? "no version reported"})`)
    .join(", ");
}

/**
 * Refuses a command whose kind needs a level the cluster has not reached. Older programs
 * cannot apply it (they reject it while newer ones would apply it), so it must not enter
 * the log before every member supports its level.
 */
export function assertCommandAllowed(
  cmd: { op: string; operation?: { kind?: string } },
  fsm: Reads,
): void {
  const needs = levelOfCommand(cmd);
  if (needs <= 1) return;
  const level = fsm.clusterLevel();
  if (level >= needs) return;
  const members = memberSupport(fsm);
  const behind = members.filter((m) => m.maxLevel < needs);
  const release = releaseOfLevel(needs) ?? "a newer release";
  const why = behind.length
    ? `not every member runs novactl ${release} or newer yet: ${describe(behind)}`
    : `every member supports it; the upgrade to level ${needs} is under way, retry shortly`;
  const what = cmd.op === "operation.create"
    ? `${cmd.operation?.kind} operation`
    : isTracked(cmd)
    ? `${cmd.op} followed as an operation`
    : cmd.op;
  throw new FeatureUnavailableError(
    `${what} needs cluster level ${needs}; the cluster runs at level ${level}: ${why}`,
    {
      op: cmd.op,
      needsLevel: needs,
      level,
      notUpgraded: behind.map(({ name, version }) => ({ name, version })),
    },
  );
}

/**
 * Refuses to run on state a newer release wrote (its level above this program's). Levels
 * never fall, and this program might misread or fail to apply what that release writes.
 */
export function assertDataDirSupported(level: number, dataDir: string): void {
  if (level <= PROGRAM_MAX_LEVEL) return;
  const needs = releaseOfLevel(level) ?? `a release newer than ${PROGRAM_VERSION}`;
  throw new NovaError(
    "usage",
    `the data dir ${dataDir} is at cluster level ${level}, written by novactl ${needs} or newer; this is novactl ${PROGRAM_VERSION}, which supports cluster levels up to ${PROGRAM_MAX_LEVEL}: run novactl ${needs} or newer on it`,
    { level, maxLevel: PROGRAM_MAX_LEVEL, version: PROGRAM_VERSION },
  );
}

/** Refuses a joiner whose release cannot apply the cluster's level. */
export function assertJoinerSupported(name: string, version: string | null, level: number): void {
  const supports = levelOfVersion(version);
  if (supports >= level) return;
  throw new FeatureUnavailableError(
    `${name} runs novactl ${
      version ?? "(no version reported)"
    }, which supports cluster levels up to ${supports}; this cluster runs at level ${level}: join it with novactl ${
      releaseOfLevel(level) ?? PROGRAM_VERSION
    } or newer (and a new join token: this one is spent)`,
    { name, version, maxLevel: supports, level },
  );
}

/** Joins being admitted in this process, and the upgrade under way (see {@link admitting}). */
let joins = 0;
let upgrading: Promise<void> | null = null;
const joinsDone: (() => void)[] = [];

/**
 * Runs a join (which checks the joiner against the level, then adds it) so that it never
 * interleaves with an upgrade (which checks every member, then raises the level): otherwise an
 * old joiner could slip in behind a `cluster.upgrade` it cannot apply. Joins run concurrently
 * with each other; an upgrade waits for those under way and holds back new ones.
 */
export async function admitting<T>(fn: () => Promise<T>): Promise<T> {
  while (upgrading) await upgrading;
  joins++;
  try {
    return await fn();
  } finally {
    if (--joins === 0) { for (const done of joinsDone.splice(0)) done(); }
  }
}

/** Runs `fn` with no join under way (see {@link admitting}). */
async function upgradingAlone<T>(fn: () => Promise<T>): Promise<T> {
  while (upgrading) await upgrading;
  let finished!: () => void;
  upgrading = new Promise((r) => finished = r);
  try {
    while (joins > 0) await new Promise<void>((r) => joinsDone.push(r));
    return await fn();
  } finally {
    upgrading = null;
    finished();
  }
}

/** The leader side of {@link Upgrader}: what it reads and how it proposes. */
export interface UpgraderNode {
  fsm: Reads;
  isLeader(): boolean;
  propose(cmd: { op: "cluster.upgrade"; level: number; at: number }): Promise<unknown>;
}

/**
 * Raises the cluster level on the leader as soon as every member supports a higher one.
 * Checked periodically: a restarted member's new version arrives as a `node.upsert`.
 */
export class Upgrader {
  #timer: ReturnType<typeof setInterval> | null = null;
  #busy = false;

  constructor(private readonly node: UpgraderNode, private readonly intervalMs = 1_000) {}

  start(): void {
    this.#timer ??= setInterval(() => void this.check(), this.intervalMs);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One pass: proposes the upgrade if it is due; resolves with the level proposed, or null. */
  async check(): Promise<number | null> {
    if (this.#busy || !this.node.isLeader()) return null;
    this.#busy = true;
    try {
      return await upgradingAlone(() => this.#raise());
    } finally {
      this.#busy = false;
    }
  }

  async #raise(): Promise<number | null> {
    if (!this.node.isLeader()) return null;
    const level = this.node.fsm.clusterLevel();
    if (level >= MAX_KNOWN_LEVEL) return null;
    const members = memberSupport(this.node.fsm);
    const target = supportedLevel(members);
    if (target <= level) return null;
    try {
      await this.node.propose({ op: "cluster.upgrade", level: target, at: Date.now() });
      log.info("cluster level raised", {
        from: level,
        to: target,
        members: describe(members),
      });
      return target;
    } catch (err) {
      log.warn("cluster upgrade not applied; will retry", { level: target, error: String(err) });
      return null;
    }
  }
}
