/** Peer-only routes: Raft messages and proposals from followers. Authenticated by the cluster secret. */
import { Hono } from "hono";
import {
  type ClusterNode,
  grantLease,
  migratorPeer,
  PEER_NAME_HEADER,
} from "../../core/cluster/mod.ts";
import { NotFoundError } from "../../core/errors/mod.ts";
import { isPeerOp, parsePeerCommand } from "../../core/fsm/command_schemas.ts";
import { type Envelope, SNAPSHOT_CHUNK_HEADER, SnapshotReceiver } from "../../core/peer/mod.ts";
import { peerAuth } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { readJson } from "../validate.ts";
import type { Env } from "../context.ts";
import type { AppDeps } from "../app.ts";

/**
 * Raft envelopes and forwarded proposals carry entries whose JSON is escaped
 * once more: far beyond the public cap, but bounded like the leader's
 * uncommitted bytes (64 MiB), and only ever sent by authenticated peers.
 */
const PEER_JSON_BODY_BYTES = 64 << 20;
/** One command a host reports: kilobytes (labels ≤ 16 KiB, operation progress ≤ 64 KiB). */
const PEER_COMMAND_BODY_BYTES = 1 << 20;

export function internalRoutes(node: ClusterNode, deps: AppDeps): Hono<Env> {
  const { blobs, leases, migrator } = deps;
  const vmOf = (name: string) => {
    const vm = node.fsm.vm(name);
    if (!vm) throw new NotFoundError("vm", name);
    return vm;
  };
  const app = new Hono<Env>();
  app.use("*", peerAuth(node));

  app.post("/raft", async (c) => {
    node.receive(await readJson(c, PEER_JSON_BODY_BYTES) as Envelope);
    return c.body(null, 204);
  });

  // A snapshot streamed by the leader, one chunk per request (body: the chunk's bytes).
  app.post("/raft/snapshot", async (c) => {
    const meta = SnapshotReceiver.parseMeta(c.req.header(SNAPSHOT_CHUNK_HEADER));
    await node.receiveSnapshotChunk(meta, c.req.raw.body);
    return c.body(null, 204);
  });

  // Node self-registration (inventory) from followers lands here on the leader.
  app.post("/propose", leaderOnly(node), async (c) => {
    const { command: raw } = await readJson(c, PEER_COMMAND_BODY_BYTES) as { command?: unknown };
    const from = c.req.header(PEER_NAME_HEADER);
    if (from && node.transport.blocked.has(from)) {
      return c.json(
        { error: { code: "unavailable", message: "partitioned (fault injection)" } },
        503,
      );
    }
    if (!isPeerOp((raw as { op?: unknown } | null)?.op)) {
      return c.json(
        { error: { code: "forbidden", message: "command not allowed from peers" } },
        403,
      );
    }
    // Schema-checked (caps included) before it can reach the log: a 400 names the field.
    const command = parsePeerCommand(raw);
    if (command.op === "audit.append" && command.records.some((r) => r.node !== from)) {
      // A member records only what it served or did itself.
      return c.json(
        { error: { code: "forbidden", message: "audit records of another node" } },
        403,
      );
    }
    const { value, index } = await node.proposeIndexed(command);
    return c.json({ result: value, index });
  });

  // Hosts renew their leases here (on the leader); a refused renewal leads to self-fencing.
  app.post("/lease", leaderOnly(node), async (c) => {
    const { node: host } = await readJson(c) as { node: string };
    if (!node.fsm.member(host)) {
      return c.json({ error: { code: "forbidden", message: "not a member" } }, 403);
    }
    return c.json(await grantLease(node, leases, host));
  });

  // Migration steps a source host asks of the destination (this node).
  app.post("/host/migrations/:op/prepare", async (c) => {
    const { vm } = await readJson(c) as { vm: string };
    return c.json(await migrator.prepareIncoming(vmOf(vm), c.req.param("op")));
  });
  app.post("/host/migrations/:op/finish", async (c) => {
    const { vm } = await readJson(c) as { vm: string };
    return c.json(await migrator.finishIncoming(vm));
  });
  app.post("/host/migrations/:op/console", async (c) => {
    const vm = c.req.query("vm") ?? "";
    vmOf(vm);
    await migrator.receiveConsole(vm, new Uint8Array(await c.req.arrayBuffer()));
    return c.body(null, 204);
  });
  app.post("/host/migrations/:op/abort", async (c) => {
    const { vm } = await readJson(c) as { vm: string };
    await migrator.abortIncoming(vmOf(vm));
    return c.json({ aborted: true });
  });
  app.post("/host/migrations/:op/receive", async (c) => {
    const { vm, from } = await readJson(c) as { vm: string; from: string };
    const peer = migratorPeer(node, from);
    await migrator.receiveVolumes(vmOf(vm), peer);
    return c.json({ received: true });
  });
  // A destination pulls a stopped VM's local volume (backing chain flattened) during cold migration.
  app.get("/host/volumes/:vm/:disk", async (c) => {
    const vm = vmOf(c.req.param("vm"));
    const disk = vm.disks.find((d) => d.id === c.req.param("disk"));
    if (!disk) throw new NotFoundError("disk", c.req.param("disk"));
    const file = await deps.host.exportVolume(disk);
    return new Response(file.readable, { headers: { "content-type": "application/octet-stream" } });
  });

  // Peers fetch image files they lack from here (the receiver verifies the hash).
  app.get("/blobs/:sha256", async (c) => {
    const file = await blobs.open(c.req.param("sha256"));
    const { size } = await file.stat();
    return new Response(file.readable, {
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
    });
  });

  if (Deno.env.get("NOVACTL_FAULT_INJECTION") === "1") {
    // Test-only: simulate a network partition of Raft traffic to/from the given peers.
    app.put("/faults", async (c) => {
      const { blocked } = await readJson(c) as { blocked: string[] };
      node.transport.blocked.clear();
      for (const p of blocked) node.transport.blocked.add(p);
      return c.json({ blocked: [...node.transport.blocked] });
    });
  }

  return app;
}
