/**
 * `novactl node start`: runs this process as a cluster member — bootstraps a
 * new cluster, joins one with a token, or restarts with the identity in the
 * data dir — and serves the REST API and peer traffic on --listen.
 */
import { createApp } from "../api/mod.ts";
import {
  ADMIN_TOKEN_FILE,
  bootstrapCluster,
  ClusterNode,
  collectInventory,
  delay,
  joinCluster,
  readIdentity,
} from "../core/cluster/mod.ts";
import type { Command as FsmCommand } from "../core/fsm/mod.ts";
import { NovaError, ValidationError } from "../core/errors/mod.ts";
import { writeIdentity } from "../core/store/mod.ts";
import { PEER_SECRET_HEADER } from "../core/peer/mod.ts";
import { log, setLogContext } from "../core/log/mod.ts";
import { join } from "node:path";
import { BlobStore } from "../host/storage/mod.ts";

export interface NodeStartOptions {
  name: string;
  dataDir: string;
  listen: string;
  advertise?: string;
  join?: string;
  token?: string;
  label: Record<string, string>;
}

export function parseListen(listen: string): { hostname: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || !(port > 0 && port < 65536)) {
    throw ValidationError.field("listen", `"${listen}" is not HOST:PORT`);
  }
  return { hostname: m[1].replace(/^\[|\]$/g, ""), port };
}

export async function startNode(opts: NodeStartOptions): Promise<void> {
  const { hostname, port } = parseListen(opts.listen);
  const url =
    (opts.advertise ?? `http://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`)
      .replace(/\/$/, "");
  if (opts.join && !opts.token) throw ValidationError.field("token", "--join needs --token");
  setLogContext({ node: opts.name });
  await Deno.mkdir(opts.dataDir, { recursive: true, mode: 0o700 });

  let identity = await readIdentity(opts.dataDir);
  if (identity) {
    if (identity.name !== opts.name) {
      throw ValidationError.field("name", `data dir belongs to node "${identity.name}"`);
    }
    if (identity.removedAt) {
      throw new NovaError(
        "conflict",
        `this node was removed from its cluster at ${identity.removedAt}; start with a new --data-dir and --join`,
      );
    }
    if (identity.url !== url) identity = { ...identity, url };
    log.info("restarting with existing identity", { clusterId: identity.clusterId });
  } else if (opts.join) {
    const inventory = await collectInventory(opts.dataDir);
    identity = await joinCluster({
      dataDir: opts.dataDir,
      name: opts.name,
      url,
      joinUrl: opts.join,
      token: opts.token!,
      inventory,
      labels: opts.label,
    });
    log.info("joined cluster", { clusterId: identity.clusterId });
  } else {
    const boot = await bootstrapCluster(opts.dataDir, opts.name, url);
    identity = boot.identity;
    log.info("bootstrapped new cluster", {
      clusterId: identity.clusterId,
      adminTokenFile: join(opts.dataDir, ADMIN_TOKEN_FILE),
    });
  }

  let shuttingDown = false;
  const node: ClusterNode = new ClusterNode({
    dataDir: opts.dataDir,
    identity,
    onRemoved: () => void onRemoved(),
  });
  const blobs = await new BlobStore(join(opts.dataDir, "blobs")).init();
  const app = createApp(node, { blobs });
  const server = Deno.serve({ hostname, port, onListen: () => {} }, app.fetch);
  node.start();
  log.info("node listening", { url });

  const registration = keepInventoryCurrent(node, opts);

  async function shutdown(signal: string): Promise<void> {
    if (shuttingDown) return;
    shuttingDown = true;
    log.info("shutting down", { signal });
    await node.handOffLeadership();
    registration.stop();
    await server.shutdown().catch(() => {});
    await node.stop();
    Deno.exit(0);
  }

  async function onRemoved(): Promise<void> {
    await writeIdentity(opts.dataDir, { ...identity!, removedAt: new Date().toISOString() });
    await shutdown("removed");
  }

  Deno.addSignalListener("SIGTERM", () => void shutdown("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => void shutdown("SIGINT"));
  await server.finished;
}

/** Registers this host's inventory in cluster state on start and refreshes it periodically. */
function keepInventoryCurrent(node: ClusterNode, opts: NodeStartOptions): { stop(): void } {
  let stopped = false;
  const loop = async () => {
    let interval = 2_000;
    while (!stopped) {
      try {
        const inventory = await collectInventory(opts.dataDir);
        const current = node.fsm.node(node.id);
        const labels = current && Object.keys(opts.label).length === 0
          ? current.labels
          : opts.label;
        await submitToLeader(node, {
          op: "node.upsert",
          name: node.id,
          url: node.identity.url,
          inventory,
          labels,
          at: Date.now(),
        });
        interval = node.fsm.config().config["nodes.inventoryRefreshMs"];
      } catch (err) {
        log.debug("inventory registration deferred", { error: String(err) });
        interval = 2_000;
      }
      const until = Date.now() + interval;
      while (!stopped && Date.now() < until) await delay(250);
    }
  };
  loop();
  return { stop: () => (stopped = true) };
}

/** Proposes locally when leading, otherwise asks the leader over the peer channel. */
async function submitToLeader(node: ClusterNode, command: FsmCommand): Promise<unknown> {
  if (node.isLeader()) return await node.propose(command);
  const url = node.leaderUrl();
  if (!url || !node.fsm.member(node.id)) throw new Error("no leader known yet");
  const res = await fetch(url + "/internal/propose", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      [PEER_SECRET_HEADER]: node.identity.clusterSecret,
    },
    body: JSON.stringify({ command }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  return body.result;
}
