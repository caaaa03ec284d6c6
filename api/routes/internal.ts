/**
 * Peer-only routes: Raft messages, snapshots, proposals, leases, migrations and
 * image files. Only a current member's node gets here (signed requests, see
 * api/auth.ts peerAuth), and whatever sender a request names — an envelope's
 * `from`, a snapshot chunk's `from`, a lease's `node`, a volume transfer's
 * `from` — must be that authenticated member, or the request is refused (403)
 * before anything changes.
 *
 * `GET /metrics/latest` answers this host's newest samples (core/cluster/alerts.ts).
 */
import { Hono } from "hono";
import {
  type ClusterNode,
  grantLease,
  MAX_REPORTS_PER_REQUEST,
  migratorPeer,
} from "../../core/cluster/mod.ts";
import { NotFoundError, NovaError, ValidationError } from "../../core/errors/mod.ts";
import { isPeerOp, parsePeerCommand } from "../../core/fsm/command_schemas.ts";
import type { Command } from "../../core/fsm/mod.ts";
import {
  type Envelope,
  FrameError,
  readFrames,
  SNAPSHOT_CHUNK_HEADER,
  SnapshotReceiver,
} from "../../core/peer/mod.ts";
import { assertSender, authenticatedPeer, peerAuth } from "../auth.ts";
import { NotLeaderError } from "../../core/errors/mod.ts";
import type { MiddlewareHandler } from "hono";
import { readJson } from "../validate.ts";
import type { Env } from "../context.ts";
import type { AppDeps } from "../app.ts";
import { log } from "../../core/log/mod.ts";
import { type LatestSamples, latestSamplesOf } from "../../core/cluster/alerts.ts";

/**
 * Raft envelopes and forwarded proposals carry entries whose JSON is escaped
 * once more: far beyond the public cap, but bounded like the leader's
 * uncommitted bytes (64 MiB), and only ever sent by authenticated peers.
 */
/**
 * What peer routes answer when there is nothing to say. Not an empty 204: answered over
 * TLS by Deno.serve to Deno's fetch, an empty response was measured to stall ~40 ms
 * (delayed-ACK-like) where a JSON 200 did not.
 */
const PEER_OK = { ok: true };
const PEER_JSON_BODY_BYTES = 64 << 20;
/** One command a host reports: kilobytes (labels ≤ 16 KiB, operation progress ≤ 64 KiB). */
const PEER_COMMAND_BODY_BYTES = 1 << 20;

/** One command's failure in a batch answer, as an error body says it. */
function errorBodyOf(err: unknown): { code: string; message: string } {
  const nova = err instanceof NovaError ? err : new NovaError("internal", String(err));
  return { code: nova.code, message: nova.message };
}

/** The member a proposed report speaks for: it must be the sender itself. */
function senderOf(command: Command): { field: string; value: string } | null {
  switch (command.op) {
    case "node.upsert":
    case "node.state":
      return { field: "name", value: command.name };
    case "vm.observed":
    case "vm.devices":
    case "vm.remove":
    case "vm.snapshot.add":
    case "vm.snapshot.remove":
      return { field: "node", value: command.node };
    case "vm.migrated":
      return { field: "from", value: command.from };
    default:
      return null;
  }
}

/** Peer requests that need the leader are answered by it directly (the sender retries). */
function leaderHere(node: ClusterNode): MiddlewareHandler<Env> {
  return async (_c, next) => {
    if (!node.isLeader()) throw new NotLeaderError(node.leaderId());
    await next();
  };
}

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
    const env = await readJson(c, PEER_JSON_BODY_BYTES) as Envelope;
    assertSender(c, env?.from, "envelope from");
    // Raft reads each message's own `from`: every one must name the sender too.
    for (const m of Array.isArray(env.messages) ? env.messages : []) {
      assertSender(c, m?.from, "message from");
    }
    node.receive(env);
    // 200 with a tiny body, not an empty 204: see PEER_OK.
    return c.json(PEER_OK);
  });

  // A peer's Raft stream (core/peer/stream.ts): one frame per batch, stepped as it comes,
  // answered when it ends. The sender was authenticated when it opened (peerAuth above);
  // each frame must name it, and it must still be a member, as a POST per batch would.
  app.post("/raft/stream", async (c) => {
    const body = c.req.raw.body;
    if (!body) throw ValidationError.field("body", "a stream of Raft frames");
    const reader = body.getReader();
    const untrack = node.transport.trackInbound(() => void reader.cancel().catch(() => {}));
    try {
      await readFrames(readerStream(reader), PEER_JSON_BODY_BYTES, (env) => {
        authenticatedPeer(node, c);
        assertSender(c, env.from, "envelope from");
        for (const m of env.messages) assertSender(c, m?.from, "message from");
        // A peer cut off by fault injection: its frames are dropped, as its POSTs are refused.
        if (!node.transport.blocked.has(env.from)) node.receive(env);
      });
    } catch (err) {
      // Refused mid-stream: stop reading; the sender sees the answer and drops the stream.
      void reader.cancel().catch(() => {});
      if (err instanceof FrameError) throw ValidationError.field("body", err.message);
      if (err instanceof NovaError) throw err;
      // The connection broke (the sender died or was cut off): nobody is left to answer.
      log.debug("raft stream ended", { peer: c.get("peer"), error: String(err) });
      return c.json(PEER_OK);
    } finally {
      untrack();
    }
    return c.json(PEER_OK);
  });

  // A snapshot streamed by the leader, one chunk per request (body: the chunk's bytes).
  app.post("/raft/snapshot", async (c) => {
    const meta = SnapshotReceiver.parseMeta(c.req.header(SNAPSHOT_CHUNK_HEADER));
    assertSender(c, meta.from, "snapshot chunk from");
    assertSender(c, meta.message?.from, "snapshot message from");
    await node.receiveSnapshotChunk(meta, c.req.raw.body);
    return c.json(PEER_OK);
  });

  // Node self-registration (inventory) from followers lands here on the leader.
  // Not forwarded: behind a forward the leader would see the forwarder, not the sender.
  // A report, or many (host/…'s ReportBatcher): each checked as one would be before any is
  // proposed; they are proposed together and answered each with its own outcome.
  app.post("/propose", leaderHere(node), async (c) => {
    const body = await readJson(c, PEER_COMMAND_BODY_BYTES) as {
      command?: unknown;
      commands?: unknown;
    };
    const from = c.get("peer")!;
    if (node.transport.blocked.has(from)) {
      return c.json(
        { error: { code: "unavailable", message: "partitioned (fault injection)" } },
        503,
      );
    }
    const batch = Array.isArray(body.commands);
    const raws = batch ? body.commands as unknown[] : [body.command];
    if (batch && (raws.length === 0 || raws.length > MAX_REPORTS_PER_REQUEST)) {
      throw ValidationError.field("commands", `1 to ${MAX_REPORTS_PER_REQUEST} commands`);
    }
    const commands: Command[] = [];
    for (const raw of raws) {
      if (!isPeerOp((raw as { op?: unknown } | null)?.op)) {
        return c.json(
          { error: { code: "forbidden", message: "command not allowed from peers" } },
          403,
        );
      }
      // Schema-checked (caps included) before it can reach the log: a 400 names the field.
      const command = parsePeerCommand(raw);
      const sender = senderOf(command);
      if (sender) assertSender(c, sender.value, `${command.op} ${sender.field}`);
      // A member records only what it served or did itself.
      for (const r of command.op === "audit.append" ? command.records : []) {
        assertSender(c, r.node, "audit.append records node");
      }
      commands.push(command);
    }
    if (!batch) {
      const { value, index } = await node.proposeIndexed(commands[0]);
      return c.json({ result: value, index });
    }
    const settled = await Promise.allSettled(commands.map((cmd) => node.proposeIndexed(cmd)));
    return c.json({
      results: settled.map((s) =>
        s.status === "fulfilled"
          ? { result: s.value.value, index: s.value.index }
          : { error: errorBodyOf(s.reason) }
      ),
    });
  });

  // Hosts renew their leases here (on the leader); a refused renewal leads to self-fencing.
  app.post("/lease", leaderHere(node), async (c) => {
    const { node: host } = await readJson(c) as { node: string };
    assertSender(c, host, "lease node");
    if (!node.fsm.member(host)) {
      return c.json({ error: { code: "forbidden", message: "not a member" } }, 403);
    }
    return c.json(await grantLease(node, leases, host));
  });

  // Migration steps a source host asks of the destination (this node).
  app.post("/host/migrations/:op/prepare", async (c) => {
    const { vm, diskPorts, display } = await readJson(c) as {
      vm: string;
      diskPorts?: unknown;
      display?: unknown;
    };
    // The source's devices, as its QEMU has them; a source that does not say has no display.
    if (display !== undefined && display !== "vga" && display !== "none") {
      throw ValidationError.field(
        "display",
        `must be "vga" or "none", not ${JSON.stringify(display)}`,
      );
    }
    return c.json(
      await migrator.prepareIncoming(vmOf(vm), c.req.param("op"), {
        diskPorts: diskPorts === true,
        display: display ?? "none",
      }),
    );
  });
  app.post("/host/migrations/:op/finish", async (c) => {
    const { vm } = await readJson(c) as { vm: string };
    return c.json(await migrator.finishIncoming(vm));
  });
  app.post("/host/migrations/:op/console", async (c) => {
    const vm = c.req.query("vm") ?? "";
    vmOf(vm);
    await migrator.receiveConsole(vm, new Uint8Array(await c.req.arrayBuffer()));
    return c.json(PEER_OK);
  });
  app.post("/host/migrations/:op/abort", async (c) => {
    const { vm } = await readJson(c) as { vm: string };
    await migrator.abortIncoming(vmOf(vm));
    return c.json({ aborted: true });
  });
  app.post("/host/migrations/:op/receive", async (c) => {
    const { vm, from } = await readJson(c) as { vm: string; from: string };
    assertSender(c, from, "volume source");
    const peer = migratorPeer(node, from);
    await migrator.receiveVolumes(vmOf(vm), peer);
    return c.json({ received: true });
  });
  // A destination pulls a stopped VM's local volume (backing chain flattened) during cold migration.
  app.get("/host/volumes/:vm/:disk", async (c) => {
    const vm = vmOf(c.req.param("vm"));
    const disk = vm.disks.find((d) => d.id === c.req.param("disk"));
    if (!disk) throw new NotFoundError("disk", c.req.param("disk"));
    // btrfs on both sides: a send stream, incremental against a snapshot the receiver has.
    const have = c.req.query("btrfs");
    if (have !== undefined) {
      const sent = await deps.host.sendVolume(disk, have.split(",").filter(Boolean).slice(0, 64));
      if (sent) {
        return new Response(sent.stream, {
          headers: {
            "content-type": "application/x-btrfs-send",
            "x-novactl-btrfs-tag": sent.tag,
            "x-novactl-btrfs-parent": sent.parent ?? "",
          },
        });
      }
    }
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

  // The leader's alert rules read this host's newest samples from here (core/cluster/alerts.ts).
  app.get("/metrics/latest", (c) => c.json<LatestSamples>(latestSamplesOf(deps.stats)));

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

/** The rest of a body whose reader we hold (so that it can be cancelled from outside). */
function readerStream(reader: ReadableStreamDefaultReader<Uint8Array>): AsyncIterable<Uint8Array> {
  return {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        yield value;
      }
    },
  };
}
