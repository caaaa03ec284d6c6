/**
 * Live migration under a ping, for tests/network_migration_test.ts and
 * bench:net: one guest pings another every 100 ms (busybox `ping -i 0.1`,
 * printed on its serial console) while the other live-migrates; the packets
 * lost are the sequence numbers that never got a reply. Also records the
 * binding options OVN's northbound held for the target's port while it
 * moved, to tell what the leader's northbound pass wrote.
 *
 * @module
 */
import { eventually } from "../../tests/support/api.ts";
import type { NetCluster } from "./net_cluster.ts";
import { scriptUserData } from "./guest.ts";

/** Milliseconds between pings. */
export const PING_INTERVAL_MS = 100;

/** User-data for the pinging guest: pings `peer` every 100 ms for ever (restarted if it exits). */
export function pingerUserData(peer: string): string {
  return scriptUserData(`while :; do ping -i 0.1 ${peer}; sleep 1; done\n`);
}

/**
 * The pings a guest pause of `pausedMs` can swallow: those sent while it lasted, plus the one
 * in flight when it began. What a migration loses beyond these is the network's share.
 */
export function pingsInPause(pausedMs: number): number {
  return Math.ceil(pausedMs / PING_INTERVAL_MS) + 1;
}

/** The sequence numbers of the replies from `peer` in busybox ping lines, in console order. */
export function pingSeqs(consoleText: string, peer: string): number[] {
  const re = new RegExp(`64 bytes from ${peer.replace(/\./g, "\\.")}: seq=(\\d+)`, "g");
  return [...consoleText.matchAll(re)].map((m) => Number(m[1]));
}

/**
 * Replies after the one with `fromSeq` (the last seen before the window) in `consoleText`:
 * the sequence numbers answered, and those missing up to the last one answered.
 */
export function repliesAfter(
  consoleText: string,
  peer: string,
  fromSeq: number,
): { answered: number[]; lost: number[] } {
  const seqs = pingSeqs(consoleText, peer);
  // The last line with fromSeq: ping restarts from 0 if it ever exits.
  const at = seqs.lastIndexOf(fromSeq);
  const answered = [...new Set(seqs.slice(at + 1).filter((s) => s > fromSeq))].sort((a, b) =>
    a - b
  );
  const lost: number[] = [];
  const last = answered.at(-1) ?? fromSeq;
  const have = new Set(answered);
  for (let s = fromSeq + 1; s < last; s++) if (!have.has(s)) lost.push(s);
  return { answered, lost };
}

/**
 * Lines of a guest's console where its kernel reports it went wrong (a soft lockup, an oops, an
 * RCU stall, a hung task, a panic): after a migration, the signs of guest memory the
 * destination got wrong, which a migration that completes and pings that come back can hide.
 */
export function kernelTrouble(consoleText: string): string[] {
  const re =
    /soft lockup|hard LOCKUP|Oops|BUG:|Call Trace|general protection|Kernel panic|rcu.*(stall|self-detected)|blocked for more than|segfault at/;
  return consoleText.split("\n").map((l) => l.trim()).filter((l) => re.test(l));
}

/** The longest run of consecutive lost sequence numbers. */
export function longestGap(lost: number[]): number {
  let best = 0;
  let run = 0;
  for (let i = 0; i < lost.length; i++) {
    run = i > 0 && lost[i] === lost[i - 1] + 1 ? run + 1 : 1;
    best = Math.max(best, run);
  }
  return best;
}

/** What one migration under ping measured. */
export interface MigrationUnderPing {
  /** Pings sent during the window that never got a reply. */
  lost: number;
  /** The longest outage, in pings (× 100 ms). */
  longestGap: number;
  /** Pings answered in the window. */
  answered: number;
  /** The migration operation's result (totalMs, qemuDowntimeMs, guestPausedMs, ...). */
  result: Record<string, unknown>;
  /** The wall time of `vm migrate`, ms. */
  migrateMs: number;
  /** Each distinct `options` of the target's port seen while it moved (`k=v` sorted, joined). */
  portOptions: string[];
  /**
   * Each distinct `options` of its southbound Port_Binding seen meanwhile; ovn-controller adds
   * `additional-chassis-activated=DST` there when the destination's RARP reached it.
   */
  bindingOptions: string[];
}

/**
 * Live-migrates `target` to `to` while `pinger` pings it at `peerIp`: waits for steady
 * replies first, then migrates (watching the target's port options in the northbound
 * database), then waits until `settleReplies` more replies came after the migration.
 */
export async function migrateUnderPing(
  net: NetCluster,
  opts: {
    pinger: string;
    target: string;
    peerIp: string;
    to: string;
    /** The target's logical port (`nv-VM-0`). */
    port: string;
    settleReplies?: number;
  },
): Promise<MigrationUnderPing> {
  const consoleOf = () => net.consoleOf(opts.pinger);
  const steady = await eventually(
    `${opts.pinger} gets steady replies from ${opts.peerIp}`,
    async () => {
      const seqs = pingSeqs(await consoleOf(), opts.peerIp);
      const tail = seqs.slice(-20);
      return tail.length === 20 && tail[19] - tail[0] === 19 ? tail[19] : undefined;
    },
    120_000,
  );
  const before = pingSeqs(await consoleOf(), opts.peerIp).at(-1) ?? steady;

  const seen = new Set<string>();
  const bound = new Set<string>();
  /** The options map of the one row `out` (ovn-*ctl --format=json) lists, as sorted `k=v`. */
  const optionsIn = (out: string, into: Set<string>) => {
    try {
      const map = JSON.parse(out).data[0][0][1] as [string, string][];
      into.add(map.map(([k, v]) => `${k}=${v}`).sort().join(" "));
    } catch { /* not readable this time */ }
  };
  let watching = true;
  const watch = (async () => {
    while (watching) {
      const [nb, sb] = await Promise.all([
        net.nbctl("--format=json", "--columns=options", "list", "Logical_Switch_Port", opts.port)
          .catch(() => ""),
        net.sbctl(
          "--format=json",
          "--columns=options",
          "find",
          "Port_Binding",
          `logical_port=${opts.port}`,
        ).catch(() => ""),
      ]);
      optionsIn(nb, seen);
      optionsIn(sb, bound);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const t0 = performance.now();
  let op: { state: string; result?: Record<string, unknown>; error?: string };
  try {
    op = JSON.parse(await net.ok("vm", "migrate", opts.target, "--to", opts.to, "-o", "json"));
  } finally {
    watching = false;
    await watch;
  }
  const migrateMs = Math.round(performance.now() - t0);
  if (op.state !== "succeeded") throw new Error(`migration ${op.state}: ${op.error}`);

  const settle = opts.settleReplies ?? 20;
  const window = await eventually(`${opts.pinger}'s pings resume after the migration`, async () => {
    const r = repliesAfter(await consoleOf(), opts.peerIp, before);
    const after = r.answered.filter((s) => s > (r.lost.at(-1) ?? before));
    return after.length >= settle ? r : undefined;
  }, 60_000);
  return {
    lost: window.lost.length,
    longestGap: longestGap(window.lost),
    answered: window.answered.length,
    result: op.result ?? {},
    migrateMs,
    portOptions: [...seen],
    bindingOptions: [...bound],
  };
}
