/**
 * Linearizability of the versioned configuration on a real 3-process cluster
 * while a nemesis SIGKILLs the leader and partitions nodes (fault injection
 * in the peer transport). Reads, writes and compare-and-set (If-Match) on one
 * key are recorded and checked with the WGL checker in tests/lin/.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert } from "../core/testing/assert.ts";
import { checkLinearizable } from "./lin/wgl.ts";
import { type ConfigInput, type ConfigOutput, configRegisterModel } from "./lin/config_register.ts";
import { HistoryRecorder } from "./lin/recorder.ts";
import { sleep } from "./support/api.ts";

const KEY = "cluster.description";
const DURATION_MS = Number(Deno.env.get("LIN_DURATION_MS") ?? 15_000);
const CLIENTS = 5;

class DefiniteFailure extends Error {}

interface Target {
  url: string;
  token: string;
}

async function request(
  t: Target,
  method: string,
  body?: unknown,
  ifMatch?: number,
): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${t.token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (ifMatch !== undefined) headers["if-match"] = String(ifMatch);
  try {
    return await fetch(`${t.url}/api/v1/config/${KEY}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(3_000),
    });
  } catch (err) {
    // Nothing was sent when the connection was refused: the operation cannot have happened.
    if (/refused/i.test(String(err))) throw new DefiniteFailure(String(err));
    throw err;
  }
}

async function read(t: Target): Promise<ConfigOutput> {
  const res = await request(t, "GET");
  const body = await res.json();
  if (res.status !== 200) throw new DefiniteFailure(`read ${res.status}`); // reads change nothing
  return { version: body.version, value: body.value };
}

async function write(t: Target, value: string, ifMatch?: number): Promise<ConfigOutput> {
  const res = await request(t, "PUT", { value }, ifMatch);
  const body = await res.json();
  if (res.status === 200) {
    return ifMatch === undefined ? { version: body.version } : { ok: true, version: body.version };
  }
  if (res.status === 409 && ifMatch !== undefined) return { ok: false };
  if (res.status === 400 || res.status === 401) throw new DefiniteFailure(`write ${res.status}`);
  throw new Error(`write ${res.status}: ${body?.error?.message}`); // 503/504: outcome unknown
}

Deno.test({
  name: "config reads, writes and CAS are linearizable under SIGKILL and partitions",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const cluster = new NovactlCluster({ env: { NOVACTL_FAULT_INJECTION: "1" } });
  await cluster.start(3);
  const token = cluster.adminToken;
  const secret =
    JSON.parse(await Deno.readTextFile(`${cluster.node("n1").dataDir}/node.json`)).clusterSecret;
  const live = () => cluster.nodes.filter((n) => n.process && !n.process.exited);
  const pick = () => {
    const nodes = live();
    return { url: nodes[Math.floor(Math.random() * nodes.length)].url, token };
  };
  const setBlocked = (url: string, blocked: string[]) =>
    fetch(`${url}/internal/faults`, {
      method: "PUT",
      headers: { "x-novactl-peer-secret": secret, "content-type": "application/json" },
      body: JSON.stringify({ blocked }),
      signal: AbortSignal.timeout(2_000),
    }).then((r) => r.body?.cancel()).catch(() => {});

  try {
    const initial = await read({ url: await cluster.leaderUrl(), token }) as {
      version: number;
      value: string;
    };
    const recorder = new HistoryRecorder<ConfigInput, ConfigOutput>();
    const deadline = Date.now() + DURATION_MS;
    const faults = { kills: 0, partitions: 0 };

    const client = async (id: number) => {
      let seq = 0;
      let lastVersion = initial.version;
      while (Date.now() < deadline) {
        const r = Math.random();
        const target = pick();
        const classify = (
          e: unknown,
        ) => (e instanceof DefiniteFailure ? "definite" as const : "indefinite" as const);
        if (r < 0.5) {
          const res = await recorder.record(id, { type: "read" }, () => read(target), classify);
          if (res.status === "ok") lastVersion = (res.output as { version: number }).version;
        } else if (r < 0.8) {
          const value = `c${id}-${seq++}`;
          const res = await recorder.record(
            id,
            { type: "write", value },
            () => write(target, value),
            classify,
          );
          if (res.status === "ok") lastVersion = (res.output as { version: number }).version;
        } else {
          const value = `c${id}-${seq++}`;
          const input = { type: "cas" as const, expectVersion: lastVersion, value };
          await recorder.record(id, input, () => write(target, value, lastVersion), classify);
        }
      }
    };

    const nemesis = async () => {
      let round = 0;
      while (Date.now() < deadline - 3_000) {
        await sleep(1_500);
        if (round++ % 2 === 0) {
          const leader = await cluster.leaderName().catch(() => null);
          if (!leader) continue;
          await cluster.kill(leader, "SIGKILL");
          faults.kills++;
          await sleep(1_500);
          await cluster.restart(leader);
        } else {
          const nodes = live();
          const victim = nodes[Math.floor(Math.random() * nodes.length)];
          const others = nodes.filter((n) => n !== victim);
          await Promise.all([
            setBlocked(victim.url, others.map((n) => n.name)),
            ...others.map((n) => setBlocked(n.url, [victim.name])),
          ]);
          faults.partitions++;
          await sleep(2_000);
          await Promise.all(nodes.map((n) => setBlocked(n.url, [])));
        }
      }
    };

    await Promise.all([nemesis(), ...Array.from({ length: CLIENTS }, (_, i) => client(i))]);
    // Healed: one more read through the leader closes the history with the final state.
    await cluster.leaderName();
    await recorder.record(99, { type: "read" }, () => read({ url: cluster.urls[0], token }));

    const history = recorder.history();
    const unknown = history.filter((op) => op.ret === Infinity).length;
    const t0 = performance.now();
    const result = checkLinearizable(configRegisterModel(initial), history, { timeoutMs: 120_000 });
    console.log(
      `linearizability: ${history.length} ops (${unknown} indefinite), ${faults.kills} leader kills, ` +
        `${faults.partitions} partitions; checked in ${Math.round(performance.now() - t0)} ms: ${
          result.ok ? "linearizable" : result.timedOut ? "TIMED OUT" : "VIOLATION"
        }`,
    );
    if (!result.ok) console.error(JSON.stringify(result.failure, null, 1)?.slice(0, 5_000));
    assert(faults.kills > 0 && faults.partitions > 0, "the nemesis injected both kinds of fault");
    assert(history.length > 100, `enough operations were recorded (${history.length})`);
    assert(result.ok, result.timedOut ? "checker timed out" : "history is not linearizable");
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
  }
});
