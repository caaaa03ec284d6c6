import { assertEquals, assertRejects } from "../testing/assert.ts";
import { join } from "node:path";
import { NovaError } from "../errors/mod.ts";
import { createCa, fingerprint, formatJoinToken, nodeSans, signCsr } from "../pki/mod.ts";
import { readIdentity, SqliteRaftLog } from "../store/mod.ts";
import { bootstrapCluster, CA_ROUTE, JOIN_ATTEMPTS, joinCluster } from "./bootstrap.ts";
import { type Inventory, StateMachine } from "../fsm/mod.ts";
import { PROGRAM_MAX_LEVEL } from "../upgrade/mod.ts";

const INVENTORY = {
  cpus: 2,
  memoryMiB: 4096,
  diskGiB: 10,
  diskFreeGiB: 10,
  accel: "tcg",
  arch: "x86_64",
} as unknown as Inventory;

/**
 * A plain-HTTP stand-in for a cluster's join endpoint: it serves its CA, answers
 * the first `refusals` joins with `refusal`, then signs the joiner's CSR.
 */
async function fakeCluster(
  refusals: number,
  refusal: { status: number; code: string },
  caRefusals = 0,
) {
  const ca = await createCa("c1");
  let joins = 0;
  let caFetches = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === CA_ROUTE) {
      return ++caFetches <= caRefusals
        ? new Response("starting", { status: 503 })
        : new Response(ca.certPem);
    }
    const body = await req.json();
    if (++joins <= refusals) {
      return Response.json(
        { error: { code: refusal.code, message: `refusal ${joins}` } },
        { status: refusal.status },
      );
    }
    const certPem = await signCsr(ca, body.csr, { name: body.name, sans: nodeSans("127.0.0.1") });
    return Response.json({
      clusterId: "c1",
      leader: "n1",
      members: [],
      certPem,
      caPem: ca.certPem,
      peerCredential: "pc",
      trustedPeers: [],
    });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    token: formatJoinToken("nvj_secret", fingerprint(ca.certPem)),
    joins: () => joins,
    caFetches: () => caFetches,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

async function joinAs(cluster: { url: string; token: string }, dataDir: string) {
  return await joinCluster({
    dataDir,
    name: "n4",
    url: "http://127.0.0.1:1",
    joinUrl: cluster.url,
    token: cluster.token,
    inventory: INVENTORY,
    labels: {},
  });
}

Deno.test("a join the cluster could not act on (a leader change dropped it) is tried again", async () => {
  await using cluster = await fakeCluster(2, { status: 503, code: "unavailable" });
  const dir = await Deno.makeTempDir();
  try {
    const identity = await joinAs(cluster, join(dir, "n4"));
    assertEquals(cluster.joins(), 3);
    assertEquals(identity.clusterId, "c1");
    assertEquals((await readIdentity(join(dir, "n4")))?.name, "n4");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a cluster that cannot serve its CA yet (a join under load) is asked again", async () => {
  await using cluster = await fakeCluster(0, { status: 503, code: "unavailable" }, 2);
  const dir = await Deno.makeTempDir();
  try {
    const identity = await joinAs(cluster, join(dir, "n4"));
    assertEquals(cluster.caFetches(), 3);
    assertEquals(identity.clusterId, "c1");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a join refused for good (a used token) is not tried again", async () => {
  await using cluster = await fakeCluster(1, { status: 403, code: "forbidden" });
  const dir = await Deno.makeTempDir();
  try {
    const err = await assertRejects(() => joinAs(cluster, join(dir, "n4")), NovaError);
    assertEquals(err.code, "forbidden");
    assertEquals(cluster.joins(), 1);
    assertEquals(await readIdentity(join(dir, "n4")), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("retries of a join are bounded", async () => {
  await using cluster = await fakeCluster(99, { status: 503, code: "no_quorum" });
  const dir = await Deno.makeTempDir();
  try {
    const err = await assertRejects(() => joinAs(cluster, join(dir, "n4")), NovaError);
    assertEquals(err.code, "no_quorum");
    assertEquals(cluster.joins(), JOIN_ATTEMPTS);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a new cluster starts at this program's level; an older release's started at 1", async () => {
  for (const [startLevel, want] of [[undefined, PROGRAM_MAX_LEVEL], [1, 1]] as const) {
    const dir = await Deno.makeTempDir({ prefix: "novactl-bootstrap-" });
    try {
      await bootstrapCluster(dir, "n1", "http://127.0.0.1:1", startLevel);
      const fsm = new StateMachine(join(dir, "state.db"));
      try {
        assertEquals(fsm.clusterLevel(), want);
      } finally {
        fsm.close();
      }
      // What the node restarts from: the log's snapshot and commit cover every entry applied.
      const log = new SqliteRaftLog(join(dir, "raft.db"));
      try {
        assertEquals(log.hardState().commit, log.snapshot().meta.index);
        assertEquals(log.snapshot().meta.index, want > 1 ? 2 : 1);
      } finally {
        await log.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});
