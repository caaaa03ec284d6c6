import { join } from "node:path";
import { assert, assertEquals } from "../testing/assert.ts";
import type { Message } from "../raft/types.ts";
import { SqliteRaftLog } from "../store/raft_log.ts";
import { toNovaError } from "../errors/mod.ts";
import {
  type Envelope,
  PeerTransport,
  SNAPSHOT_CHUNK_HEADER,
  SNAPSHOT_PATH,
  type TransportHooks,
} from "./transport.ts";
import { SnapshotReceiver } from "./snapshot_receiver.ts";
import { RAFT_STREAM_PATH, readFrames } from "./stream.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const SELF = { id: "a", url: "http://a", clusterId: "c1", secret: "s" };

/** Records what the transport tells Raft. */
function recordingHooks(url: string) {
  const events = { unreachable: 0, snapshots: [] as boolean[] };
  const hooks: TransportHooks = {
    resolve: () => url,
    unreachable: () => events.unreachable++,
    snapshotSent: (_id, ok) => events.snapshots.push(ok),
    removed: () => {},
  };
  return { events, hooks };
}

const app = (index: number, bytes: number): Message => ({
  type: "app",
  from: "a",
  to: "b",
  term: 1,
  index,
  logTerm: 1,
  entries: [{ index: index + 1, term: 1, type: "normal", data: "x".repeat(bytes) }],
  commit: 0,
});

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert(cond(), `timed out waiting for ${what}`);
}

/**
 * A peer that takes POSTed batches but answers none until released. It predates
 * streams (404 to one), so the transport posts its batches: the queue caps below
 * are those of that path.
 */
function stalledPeer() {
  let release!: () => void;
  const stalled = new Promise<void>((r) => (release = r));
  const received: Message[] = [];
  const server = Deno.serve({ port: 0, onListen: () => {} }, async (req) => {
    if (new URL(req.url).pathname === RAFT_STREAM_PATH) {
      await req.body?.cancel();
      return new Response("no such route", { status: 404 });
    }
    const env = await req.json() as Envelope;
    received.push(...env.messages);
    await stalled;
    return new Response(null, { status: 204 });
  });
  return { release, received, server, url: `http://127.0.0.1:${server.addr.port}` };
}

testWithTimeout({
  name:
    "peer queue cap: a stalled peer's queue stays bounded, dropping the oldest and reporting it",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const peer = stalledPeer();
  const { events, hooks } = recordingHooks(peer.url);
  const t = new PeerTransport(SELF, hooks, { maxQueueBytes: 10_000, maxQueueMessages: 1000 });
  try {
    t.send([app(-2, 10)]); // finds out that the peer takes no streams
    await until("the stream refused", () => events.unreachable === 1);
    peer.received.length = 0;
    t.send([app(0, 100), app(1, 100)]); // two POSTs in flight, then the peer stalls
    await until("two batches in flight", () => peer.received.length === 2);
    for (let i = 2; i < 1002; i++) t.send([app(i, 1000)]);
    assert(t.queuedFor("b") <= 10, `queue holds ${t.queuedFor("b")} messages of ~1 KB`);
    assert(events.unreachable > 0, "Raft was told to probe instead of pipelining");
    peer.release();
    // The newest message is always kept: it must arrive, last (a third POST may have
    // gone out before the stall took hold, so "something more arrived" is not enough).
    await until("the newest message arrives", () => peer.received.some((m) => m.index === 1001));
    assertEquals(t.queuedFor("b"), 0);
    assertEquals(peer.received.at(-1)!.index, 1001, "the newest message came last");
    assert(peer.received.length < 20, `only the retained tail was sent (${peer.received.length})`);
  } finally {
    peer.release();
    t.close();
    await peer.server.shutdown();
  }
});

testWithTimeout(
  { name: "peer queue cap: the message count is capped too", timeoutMs: 2 * MINUTE },
  async () => {
    const peer = stalledPeer();
    const { events, hooks } = recordingHooks(peer.url);
    const t = new PeerTransport(SELF, hooks, { maxQueueMessages: 3 });
    const heartbeat = (i: number): Message => ({ type: "heartbeat", from: "a", to: "b", term: i });
    try {
      t.send([heartbeat(0)]); // finds out that the peer takes no streams
      await until("the stream refused", () => events.unreachable === 1);
      peer.received.length = 0;
      t.send([heartbeat(1)]);
      t.send([heartbeat(2)]);
      await until("two batches in flight", () => peer.received.length === 2);
      for (let i = 3; i <= 100; i++) t.send([heartbeat(i)]);
      assertEquals(t.queuedFor("b"), 3);
      assert(events.unreachable > 0);
    } finally {
      peer.release();
      t.close();
      await peer.server.shutdown();
    }
  },
);

testWithTimeout({
  name: "snapshot streaming: a refused chunk fails the transfer and Raft hears of it",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const server = Deno.serve({ port: 0, onListen: () => {} }, async (req) => {
    await req.body?.cancel();
    return new Response("no", { status: 409 });
  });
  const source = join(await Deno.makeTempDir(), "snap");
  await Deno.writeTextFile(source, "x".repeat(100));
  const { events, hooks } = recordingHooks(`http://127.0.0.1:${server.addr.port}`);
  const t = new PeerTransport(SELF, hooks, { snapshotChunkBytes: 10 });
  try {
    t.send([{
      type: "snap",
      from: "a",
      to: "b",
      term: 1,
      snapshot: {
        meta: { index: 5, term: 1, conf: { voters: [], learners: [] } },
        data: "",
        file: source,
      },
    }]);
    await until("the outcome", () => events.snapshots.length > 0);
    assertEquals(events.snapshots, [false]);
    assertEquals(events.unreachable, 1);
  } finally {
    t.close();
    await server.shutdown();
  }
});

/** A peer endpoint backed by a real SnapshotReceiver writing into `dir`. */
function snapshotPeer(dir: string) {
  const delivered: Envelope[] = [];
  const bodySizes: number[] = [];
  const receiver = new SnapshotReceiver(dir, (env) => delivered.push(env));
  const server = Deno.serve({ port: 0, onListen: () => {} }, async (req) => {
    if (new URL(req.url).pathname !== SNAPSHOT_PATH) return new Response(null, { status: 404 });
    try {
      const meta = SnapshotReceiver.parseMeta(req.headers.get(SNAPSHOT_CHUNK_HEADER) ?? undefined);
      bodySizes.push(Number(req.headers.get("content-length")));
      await receiver.chunk(meta, req.body);
      return new Response(null, { status: 204 });
    } catch (err) {
      return new Response(String(err), {
        status: toNovaError(err).code === "conflict" ? 409 : 400,
      });
    }
  });
  return { delivered, bodySizes, receiver, server, url: `http://127.0.0.1:${server.addr.port}` };
}

testWithTimeout({
  name: "snapshot streaming: a file goes in chunks to a temp file, then to Raft by reference",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const senderDir = await Deno.makeTempDir();
  const receiverDir = await Deno.makeTempDir();
  const source = join(senderDir, "snap-1-500.snap");
  const data = Array.from({ length: 2000 }, (_, i) => `["vms",{"name":"vm${i}"}]\n`).join("");
  await Deno.writeTextFile(source, data);
  const peer = snapshotPeer(receiverDir);
  const { events, hooks } = recordingHooks(peer.url);
  const t = new PeerTransport(SELF, hooks, { snapshotChunkBytes: 4096 });
  try {
    t.send([{
      type: "snap",
      from: "a",
      to: "b",
      term: 3,
      snapshot: {
        meta: { index: 500, term: 2, conf: { voters: ["a"], learners: [] } },
        data: "",
        file: source,
      },
    }]);
    await until("the snapshot to be delivered", () => events.snapshots.length > 0);
    assertEquals(events.snapshots, [true]);
    const chunks = Math.ceil(data.length / 4096);
    assertEquals(peer.bodySizes.length, chunks, "one request per chunk");
    assert(
      chunks > 1 && Math.max(...peer.bodySizes) <= 4096,
      "no request carried the whole snapshot",
    );
    assertEquals(peer.delivered.length, 1);
    const m = peer.delivered[0].messages[0];
    assertEquals([m.type, m.term, m.snapshot!.meta.index, m.snapshot!.data], ["snap", 3, 500, ""]);
    assertEquals(m.snapshot!.file, join(receiverDir, "recv-2-500.snap"), "handed over as a file");
    assertEquals(await Deno.readTextFile(m.snapshot!.file!), data, "byte-identical");
    assertEquals([...Deno.readDirSync(receiverDir)].map((f) => f.name), ["recv-2-500.snap"]);
  } finally {
    t.close();
    await peer.server.shutdown();
  }
});

testWithTimeout({
  name: "snapshot receiver: an out-of-order chunk or a non-integer index is refused",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const receiverDir = await Deno.makeTempDir();
  const peer = snapshotPeer(receiverDir);
  const meta = {
    clusterId: "c1",
    from: "a",
    fromUrl: "http://a",
    transfer: crypto.randomUUID(),
    offset: 10,
    total: 20,
    message: {
      type: "snap" as const,
      from: "a",
      to: "b",
      term: 1,
      snapshot: { meta: { index: 5, term: 1, conf: { voters: [], learners: [] } }, data: "" },
    },
  };
  try {
    const res = await fetch(peer.url + SNAPSHOT_PATH, {
      method: "POST",
      headers: { [SNAPSHOT_CHUNK_HEADER]: encodeURIComponent(JSON.stringify(meta)) },
      body: "0123456789",
    });
    assertEquals(res.status, 409, await res.text());
    const evil = {
      ...meta,
      offset: 0,
      message: {
        ...meta.message,
        snapshot: {
          ...meta.message.snapshot,
          meta: { index: "../x", term: 1, conf: meta.message.snapshot.meta.conf },
        },
      },
    };
    const res2 = await fetch(peer.url + SNAPSHOT_PATH, {
      method: "POST",
      headers: { [SNAPSHOT_CHUNK_HEADER]: encodeURIComponent(JSON.stringify(evil)) },
      body: "0123456789",
    });
    assertEquals(res2.status, 400, "an index that is not an integer never becomes a file name");
    await res2.body?.cancel();
    assertEquals(peer.delivered.length, 0);
  } finally {
    await peer.server.shutdown();
  }
});

testWithTimeout({
  name: "snapshot files: a received snapshot is moved into the log's snapshot directory on install",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir();
  const log = new SqliteRaftLog(join(dir, "raft.db"));
  const received = join(log.snapshotDir, "recv-2-9.snap");
  await Deno.writeTextFile(received, "state@9");
  const stale = join(log.snapshotDir, "recv-1-4.snap");
  await Deno.writeTextFile(stale, "refused earlier");
  const meta = { index: 9, term: 2, conf: { voters: ["a"], learners: [] } };
  await log.save({ snapshot: { meta, data: "", file: received }, entries: [], hardState: null });
  assertEquals(log.snapshot().file, log.snapshotPath(meta));
  assertEquals(await Deno.readTextFile(log.snapshotPath(meta)), "state@9");
  assertEquals(log.snapshotBytes(), 7);
  const names = [...Deno.readDirSync(log.snapshotDir)].map((f) => f.name).sort();
  assertEquals(names, ["snap-2-9.snap"], "the refused older snapshot was cleaned up");
  await log.close();
});

/** A peer that reads Raft streams (the real route's framing), or stops reading them. */
function streamingPeer(opts: { status?: number; read?: boolean } = {}) {
  const received: Message[] = [];
  const requests: string[] = [];
  let release!: () => void;
  const stalled = new Promise<void>((r) => (release = r));
  const server = Deno.serve({ port: 0, onListen: () => {} }, async (req) => {
    requests.push(new URL(req.url).pathname);
    if (opts.status) {
      await req.body?.cancel();
      return new Response("refused", { status: opts.status });
    }
    if (opts.read === false) {
      await stalled; // reads nothing until released: the sender's writes pile up
      await req.body?.cancel();
      return new Response("late", { status: 503 });
    }
    await readFrames(req.body!, 1 << 20, (env) => received.push(...env.messages));
    return Response.json({ ok: true });
  });
  return {
    received,
    requests,
    server,
    release,
    url: `http://127.0.0.1:${server.addr.port}`,
  };
}

testWithTimeout({
  name: "raft stream: many batches travel in order over one request",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const peer = streamingPeer();
  const { events, hooks } = recordingHooks(peer.url);
  const t = new PeerTransport(SELF, hooks);
  try {
    for (let i = 0; i < 500; i++) {
      t.send([app(i, 50)]);
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await until("all 500 batches", () => peer.received.length === 500);
    assertEquals(peer.received.map((m) => m.index), [...Array(500).keys()]);
    assertEquals(peer.requests, [RAFT_STREAM_PATH], "one request carried them all");
    assertEquals(events.unreachable, 0);
  } finally {
    t.close();
    await peer.server.shutdown();
  }
});

testWithTimeout({
  name: "raft stream: a peer that stops reading costs at most the queue cap, then Raft hears of it",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const peer = streamingPeer({ read: false });
  const { events, hooks } = recordingHooks(peer.url);
  const t = new PeerTransport(SELF, hooks, { maxQueueBytes: 256 << 10 });
  try {
    // 64 MB offered, 64 KB at a time; the socket takes a few MB, the stream holds the rest.
    let offered = 0;
    while (offered < 1000 && events.unreachable === 0) {
      t.send([app(offered++, 64 << 10)]);
      await new Promise((r) => setTimeout(r, 1));
    }
    assert(events.unreachable > 0, "Raft was told the peer is unreachable");
    // Loopback socket buffers take a few MB before the stream's own backlog grows.
    assert(offered * 64 < 16 << 10, `gave up only after ${offered * 64} KB`);
  } finally {
    peer.release();
    t.close();
    await peer.server.shutdown();
  }
});

testWithTimeout({
  name: "raft stream: a refused stream is dropped and Raft told; 410 says this node was removed",
  timeoutMs: 2 * MINUTE,
}, async () => {
  for (const status of [403, 410, 503]) {
    const peer = streamingPeer({ status });
    let removed = 0;
    const { events, hooks } = recordingHooks(peer.url);
    const t = new PeerTransport(SELF, { ...hooks, removed: () => removed++ });
    try {
      t.send([app(1, 10)]);
      await until(`the ${status}`, () => events.unreachable === 1);
      assertEquals(removed, status === 410 ? 1 : 0);
      t.send([app(2, 10)]); // the next batch opens a new stream
      await until("a second stream", () => peer.requests.length === 2);
    } finally {
      t.close();
      await peer.server.shutdown();
    }
  }
});

testWithTimeout({
  name: "raft stream: a stream that breaks while batches are written never throws into Raft",
  timeoutMs: 2 * MINUTE,
}, async () => {
  // fetch takes one frame, then gives the body up and fails, as when the peer dies mid-stream.
  let opened = 0;
  const breaking = async (_url: string, init?: RequestInit) => {
    opened++;
    const reader = (init!.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    await reader.cancel();
    // The failure surfaces a little later: meanwhile the Raft loop keeps writing.
    await new Promise((r) => setTimeout(r, 30));
    throw new TypeError("fetch failed");
  };
  const { events, hooks } = recordingHooks("http://peer");
  const t = new PeerTransport(SELF, hooks, {}, breaking);
  try {
    for (let i = 0; i < 50; i++) {
      t.send([app(i, 10)]); // would throw "cannot close or enqueue" on a given-up body
      await new Promise((r) => setTimeout(r, 1));
    }
    assert(events.unreachable > 0, "Raft heard that the peer is unreachable");
    assert(opened > 1, "later batches opened new streams");
  } finally {
    t.close();
  }
});

/** A fetch that sends to `peer` from its `realAfter`-th call on; before that, as `silent` does. */
function fetchFailingFirst(
  peerUrl: string,
  silent: (body: ReadableStream<Uint8Array>, signal: AbortSignal) => Promise<Response>,
  realAfter = 1,
) {
  const calls: { aborted: () => boolean }[] = [];
  const peerFetch = (url: string, init?: RequestInit) => {
    const signal = init!.signal!;
    calls.push({ aborted: () => signal.aborted });
    if (calls.length <= realAfter) {
      return silent(init!.body as ReadableStream<Uint8Array>, signal);
    }
    return fetch(peerUrl + new URL(url).pathname, init);
  };
  return { calls, peerFetch };
}

/** Like fetch when nothing answers: pending until aborted, then rejecting. */
function untilAborted(signal: AbortSignal): Promise<Response> {
  return new Promise((_, reject) => {
    signal.addEventListener("abort", () => reject(new TypeError("aborted")), { once: true });
  });
}

/** Sends a small batch every 10 ms until `done` (Raft's heartbeats keep a live peer busy). */
async function sendUntil(t: PeerTransport, what: string, done: () => boolean): Promise<number> {
  let sent = 0;
  for (let i = 0; i < 500 && !done(); i++) {
    t.send([app(sent++, 10)]);
    await new Promise((r) => setTimeout(r, 10));
  }
  assert(done(), `timed out waiting for ${what}`);
  return sent;
}

testWithTimeout({
  name: "raft stream: a connection that takes nothing (a hung handshake) is aborted and replaced",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const peer = streamingPeer();
  const { events, hooks } = recordingHooks(peer.url);
  // The first stream's connection never takes a byte and never answers.
  const { calls, peerFetch } = fetchFailingFirst(peer.url, (_body, signal) => untilAborted(signal));
  const t = new PeerTransport(SELF, hooks, { streamStallMs: 200 }, peerFetch);
  try {
    await sendUntil(t, "frames on a second stream", () => peer.received.length > 0);
    assert(calls[0].aborted(), "the stalled stream's request was aborted");
    assert(events.unreachable >= 1, "Raft heard that what the stalled stream held was lost");
    assertEquals(peer.requests, [RAFT_STREAM_PATH], "one stream reached the peer");
  } finally {
    t.close();
    await peer.server.shutdown();
  }
});

testWithTimeout({
  name:
    "raft stream: a connection that takes frames but is never answered is retired, then aborted",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const peer = streamingPeer();
  const { hooks } = recordingHooks(peer.url);
  // The first stream's connection reads everything into a void: no error, no answer.
  const { calls, peerFetch } = fetchFailingFirst(peer.url, async (body, signal) => {
    const reader = body.getReader();
    signal.addEventListener("abort", () => void reader.cancel().catch(() => {}));
    while (!(await reader.read()).done) { /* a black hole */ }
    return await untilAborted(signal);
  });
  const t = new PeerTransport(
    SELF,
    hooks,
    { streamStallMs: 300, streamMaxAgeMs: 200 },
    peerFetch,
  );
  try {
    await sendUntil(t, "frames on a second stream", () => peer.received.length > 0);
    await until("the silent stream aborted", () => calls[0].aborted());
  } finally {
    t.close();
    await peer.server.shutdown();
  }
});

testWithTimeout({
  name: "raft stream: retiring old streams loses no message and costs Raft no probe",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const peer = streamingPeer();
  const { events, hooks } = recordingHooks(peer.url);
  const t = new PeerTransport(SELF, hooks, { streamMaxAgeMs: 100 });
  try {
    let sent = 0;
    for (let i = 0; i < 100; i++) {
      t.send([app(sent++, 50)]);
      await new Promise((r) => setTimeout(r, 5));
    }
    await until("every message", () => peer.received.length === sent);
    // Streams overlap while one retires, so order across them is not promised; delivery is.
    assertEquals(peer.received.map((m) => m.index).sort((a, b) => a! - b!), [
      ...Array(sent).keys(),
    ]);
    assert(peer.requests.length >= 3, `${peer.requests.length} streams in 0.5 s`);
    assertEquals(events.unreachable, 0, "a clean retirement is not a lost peer");
  } finally {
    t.close();
    await peer.server.shutdown();
  }
});
