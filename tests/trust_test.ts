/**
 * Trust between real processes over real TLS (issue 9): the reproduced attack
 * (a joined node forging Raft messages as another member, or as a leader it is
 * not) is refused and changes nothing; peer routes refuse clients without a
 * member's certificate — none, another CA's, a CA-signed one that is not the
 * member's recorded certificate, a removed member's; a join token pinning
 * another CA fails; a 200 MB join body is refused early with flat memory; a
 * slowloris connection is closed; curl with --cacert DIR/ca.crt works.
 */
import { DatabaseSync } from "node:sqlite";
import { sha256Hex } from "../core/secrets/mod.ts";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { clusterFetch, fetchAsNode, fetchSignedWith, nodeCertAt } from "../bench/lib/tls.ts";
import { RequestSigner } from "../core/peer/signature.ts";
import { RAFT_STREAM_PATH, RAFT_STREAM_TYPE } from "../core/peer/stream.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";
import {
  createCa,
  createNodeKeyAndCsr,
  fingerprint,
  type KeyPairPem,
  parseJoinToken,
  signCsr,
} from "../core/pki/mod.ts";

interface Status {
  clusterId: string;
  leader: string | null;
  term: number;
  commitIndex: number;
  members: { name: string; role: string }[];
}

/** Header timeout the nodes run with here, so the slowloris check is quick. */
const HEADERS_TIMEOUT_MS = 2_000;

function rssKiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

function pidOf(dataDir: string): number {
  return JSON.parse(Deno.readTextFileSync(`${dataDir}/listen.json`)).pid;
}

/** A key and certificate for `name` signed by `ca`, as a client would present them. */
/**
 * A signer for a fresh key and certificate named `name`, signed by `ca`, that trusts
 * the cluster's CA `clusterCaPem` (to reach its nodes).
 */
async function signerFor(
  ca: KeyPairPem,
  name: string,
  clusterCaPem: string,
): Promise<RequestSigner> {
  const { keyPem, csrPem } = await createNodeKeyAndCsr(name, ["127.0.0.1"]);
  const certPem = await signCsr(ca, csrPem, { name, sans: ["127.0.0.1"] });
  return new RequestSigner(name, { certPem, keyPem, caPem: clusterCaPem }, nodeCertAt);
}

/**
 * POSTs 200 MiB to /api/v1/cluster/join over a raw TLS connection, with a declared
 * Content-Length or chunked, until the node answers or hangs up. Returns the status
 * line it answered ("" if it only closed) and how many MiB got written.
 */
async function postHuge(
  url: string,
  caPem: string,
  mode: "declared" | "chunked",
): Promise<{ head: string; mib: number }> {
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: Number(new URL(url).port),
    caCerts: [caPem],
  });
  const enc = new TextEncoder();
  const writeAll = async (bytes: Uint8Array) => {
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
  };
  const length = mode === "declared"
    ? `Content-Length: ${200 << 20}`
    : "Transfer-Encoding: chunked";
  const chunk = new Uint8Array(1 << 20).fill(0x20);
  let mib = 0;
  let done = false;
  const writing = (async () => {
    try {
      await writeAll(enc.encode(
        `POST /api/v1/cluster/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${length}\r\n\r\n`,
      ));
      while (mib < 200 && !done) {
        if (mode === "chunked") await writeAll(enc.encode(`${(1 << 20).toString(16)}\r\n`));
        await writeAll(chunk);
        if (mode === "chunked") await writeAll(enc.encode("\r\n"));
        mib++;
      }
    } catch { /* the node closed the connection */ }
  })();
  const buf = new Uint8Array(4096);
  const n = await conn.read(buf).catch(() => null);
  done = true;
  await writing;
  try {
    conn.close();
  } catch { /* closed by the node */ }
  const head = new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0];
  return { head, mib };
}

testWithTimeout({
  name:
    "trust: forged senders, foreign and revoked certificates, pinned joins, body and connection limits",
  timeoutMs: 15 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster({
    env: {
      NOVACTL_ACCEL: "tcg",
      NOVACTL_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
    },
  });
  await cluster.start(3);
  const token = cluster.adminToken;
  const n1 = cluster.node("n1");
  const leaderName = await cluster.leaderName();
  const leader = cluster.node(leaderName);
  const [other1, other2] = ["n1", "n2", "n3"].filter((n) => n !== leaderName);
  const status = async () => (await api<Status>(`${leader.url}/api/v1/cluster`, { token })).body;
  const caPem = Deno.readTextFileSync(cluster.caFile);

  /** An envelope as a member would send it to the leader's Raft route. */
  const clusterId = (await api<Status>(`${leader.url}/api/v1/cluster?local=true`, { token }))
    .body.clusterId;
  /** An AppendEntries as a leader would send it, or (no entries) a harmless heartbeat reply. */
  const envelope = (from: string, term: number, entries?: unknown[]) =>
    JSON.stringify({
      clusterId,
      from,
      fromUrl: "https://127.0.0.1:1",
      messages: [
        entries
          ? { type: "app", from, to: leaderName, term, index: 0, logTerm: 0, entries, commit: 0 }
          : { type: "heartbeatResp", from, to: leaderName, term },
      ],
    });

  try {
    const before = await status();
    const forgedToken = "nva_forged-admin-token-of-the-attacker";
    const forgedEntry = {
      index: 1e6,
      term: before.term + 5,
      type: "normal",
      data: JSON.stringify({
        op: "apiToken.create",
        name: "evil",
        role: "admin",
        hash: sha256Hex(forgedToken),
        at: Date.now(),
      }),
    };
    const forge = (as: string, from: string, term: number) =>
      fetchAsNode(cluster.node(as).dataDir, `${leader.url}/internal/raft`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: envelope(from, term, [forgedEntry]),
      }).then(async (r) => (await r.body?.cancel(), r.status));

    await step(t, "a member forging an envelope as another member gets 403", async () => {
      assertEquals(await forge(other1, other2, before.term + 5), 403);
    });

    await step(t, "a member claiming to lead a higher term as a non-member gets 403", async () => {
      assertEquals(await forge(other1, "evil", before.term + 5), 403);
    });

    // The same over a Raft stream (core/peer/stream.ts): authenticated once when it opens,
    // every frame is checked against that identity.
    const forgeOnStream = (as: string, frames: string[]) =>
      fetchAsNode(cluster.node(as).dataDir, `${leader.url}${RAFT_STREAM_PATH}`, {
        method: "POST",
        headers: { "content-type": RAFT_STREAM_TYPE },
        body: frames.join("\n") + "\n",
      }).then(async (r) => (await r.body?.cancel(), r.status));

    await step(t, "on a Raft stream, a frame naming another member gets 403", async () => {
      // A valid frame first: the stream was accepted, the forged frame is refused on its own.
      const valid = envelope(other1, before.term);
      assertEquals(await forgeOnStream(other1, [valid]), 200);
      const forged = envelope(other2, before.term + 5, [forgedEntry]);
      assertEquals(await forgeOnStream(other1, [valid, forged]), 403);
      assertEquals(
        await forgeOnStream(other1, [envelope("evil", before.term + 5, [forgedEntry])]),
        403,
      );
    });

    await step(
      t,
      "state is unchanged: same leader and term, the forged token is refused",
      async () => {
        const after = await status();
        assertEquals(after.leader, before.leader);
        assertEquals(after.term, before.term);
        const r = await api(`${leader.url}/api/v1/cluster/tokens`, { token: forgedToken });
        assertEquals(r.status, 401);
      },
    );

    const raftWith = async (signer?: RequestSigner) => {
      const init = {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: envelope(other1, before.term),
      };
      const url = `${leader.url}/internal/raft`;
      const res = await (signer ? fetchSignedWith(signer, url, init) : clusterFetch(url, init));
      await res.body?.cancel();
      return res.status;
    };

    await step(
      t,
      "control: a request signed with the member's own key is accepted on /internal/raft",
      async () => {
        const res = await fetchAsNode(cluster.node(other1).dataDir, `${leader.url}/internal/raft`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: envelope(other1, before.term),
        });
        await res.body?.cancel();
        assertEquals(res.status, 200);
      },
    );

    await step(t, "an unsigned request is refused on /internal/raft", async () => {
      assertEquals(await raftWith(), 403);
    });

    await step(t, "a request signed with another CA's certificate is refused", async () => {
      assertEquals(await raftWith(await signerFor(await createCa(clusterId), other1, caPem)), 403);
    });

    await step(
      t,
      "the cluster CA key alone is not enough: a fresh cert for a member's name is refused",
      async () => {
        // What an attacker holding the CA key (from a member's state.db) could mint.
        const db = new DatabaseSync(`${n1.dataDir}/state.db`, { readOnly: true });
        const row = db.prepare("SELECT cert_pem, key_pem FROM cluster_ca").get() as {
          cert_pem: string;
          key_pem: string;
        };
        db.close();
        const minted = await signerFor(
          { certPem: row.cert_pem, keyPem: row.key_pem },
          other1,
          caPem,
        );
        assertEquals(await raftWith(minted), 403);
      },
    );

    await step(t, "curl --cacert DIR/ca.crt https://.../healthz works", async () => {
      const out = await new Deno.Command("curl", {
        args: ["-sS", "--cacert", cluster.caFile, `${n1.url}/healthz`],
      }).output();
      assert(out.success, new TextDecoder().decode(out.stderr));
      assert(new TextDecoder().decode(out.stdout).includes('"ok"'));
    });

    await step(t, "a join token pinning another CA fails with a clear error", async () => {
      const real =
        (await cli(["cluster", "token", "create", "--server", leader.url, "--token", token]))
          .stdout.trim().split("\n").pop()!;
      const other = await createCa("elsewhere");
      const wrong = `${parseJoinToken(real).secret}.${fingerprint(other.certPem)}`;
      const dir = await Deno.makeTempDir();
      try {
        const r = await cli([
          "node",
          "start",
          "--name",
          "intruder",
          "--data-dir",
          `${dir}/d`,
          "--listen",
          "127.0.0.1:0",
          "--join",
          leader.url,
        ], { NOVACTL_JOIN_TOKEN: wrong });
        assertEquals(r.code, 1, r.stderr);
        assert(/fingerprint/.test(r.stderr), r.stderr);
        const s = await status();
        assert(!s.members.some((m) => m.name === "intruder"));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });

    await step(
      t,
      "a 200 MB POST to /join is refused early and the node's memory stays flat",
      async () => {
        const pid = pidOf(leader.dataDir);
        const rssBefore = rssKiB(pid);
        const chunked = await postHuge(leader.url, caPem, "chunked");
        const declared = await postHuge(leader.url, caPem, "declared");
        console.log(`chunked: ${JSON.stringify(chunked)}; declared: ${JSON.stringify(declared)}`);
        assert(declared.head.startsWith("HTTP/1.1 413"), `declared length: ${declared.head}`);
        assert(chunked.head === "" || chunked.head.startsWith("HTTP/1.1 413"), chunked.head);
        assert(declared.mib < 200 && chunked.mib < 200, "the node read a whole 200 MB body");
        const grownMiB = (rssKiB(pid) - rssBefore) / 1024;
        console.log(`RSS growth across two 200 MB join bodies: ${grownMiB.toFixed(1)} MiB`);
        assert(grownMiB < 50, `RSS grew by ${grownMiB.toFixed(1)} MiB`);
      },
    );

    await step(t, "a slowloris connection is closed at the header timeout", async () => {
      const conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: Number(new URL(n1.url).port),
        caCerts: [caPem],
      });
      const enc = new TextEncoder();
      await conn.write(enc.encode("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
      // One header line a second, never finishing; the node must hang up long before 30 lines.
      let lines = 0;
      let closed = false;
      const ended = conn.read(new Uint8Array(1024)).then(
        () => (closed = true),
        () => (closed = true),
      );
      while (!closed && lines < 30) {
        await new Promise((r) => setTimeout(r, 1_000));
        try {
          await conn.write(enc.encode(`X-Slow-${lines}: 1\r\n`));
        } catch {
          closed = true;
        }
        lines++;
      }
      await Promise.race([ended, new Promise((r) => setTimeout(r, 1_000))]);
      try {
        conn.close();
      } catch { /* already closed */ }
      assert(closed, "the slowloris connection stayed open for 30 header lines");
      console.log(
        `slowloris closed after ${lines} header lines (timeout ${HEADERS_TIMEOUT_MS} ms)`,
      );
    });

    await step(t, "a removed member's certificate is refused", async () => {
      const victim = other2;
      const r = await cli(["cluster", "remove", victim, "--server", leader.url, "--token", token]);
      assertEquals(r.code, 0, r.stderr);
      await eventually(
        "the victim is gone from the members",
        async () => !(await status()).members.some((m) => m.name === victim),
      );
      const res = await fetchAsNode(cluster.node(victim).dataDir, `${leader.url}/internal/lease`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ node: victim }),
      });
      await res.body?.cancel();
      assert(
        res.status === 410 || res.status === 403,
        `removed member's lease: HTTP ${res.status}`,
      );
      const raft = await fetchAsNode(cluster.node(victim).dataDir, `${leader.url}/internal/raft`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: envelope(victim, before.term),
      });
      await raft.body?.cancel();
      assertEquals(raft.status, 410);
      const stream = await fetchAsNode(
        cluster.node(victim).dataDir,
        `${leader.url}${RAFT_STREAM_PATH}`,
        {
          method: "POST",
          headers: { "content-type": RAFT_STREAM_TYPE },
          body: envelope(victim, before.term) + "\n",
        },
      );
      await stream.body?.cancel();
      assertEquals(stream.status, 410, "a removed member's stream");
    });
  } finally {
    await cluster.stop();
  }
});

testWithTimeout({
  name:
    "trust: --insecure-http is loopback-only, and its peers authenticate with their own credentials",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  await step(
    t,
    "--insecure-http on a non-loopback address is refused, naming the flag",
    async () => {
      const dir = await Deno.makeTempDir();
      try {
        const r = await cli([
          "node",
          "start",
          "--name",
          "x",
          "--data-dir",
          `${dir}/d`,
          "--listen",
          "0.0.0.0:0",
          "--insecure-http",
        ]);
        assert(r.code !== 0, "started");
        assert(/--insecure-http/.test(r.stderr), r.stderr);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );

  const cluster = new NovactlCluster({ insecureHttp: true, env: { NOVACTL_ACCEL: "tcg" } });
  await cluster.start(2, { voters: 1 });
  try {
    const token = cluster.adminToken;
    const leaderName = await cluster.leaderName();
    const leader = cluster.node(leaderName);
    const other = cluster.nodes.find((n) => n.name !== leaderName)!;
    const s = (await api<Status & { clusterId: string }>(
      `${leader.url}/api/v1/cluster?local=true`,
      { token },
    )).body;
    const beat = (from: string) =>
      JSON.stringify({
        clusterId: s.clusterId,
        from,
        fromUrl: other.url,
        messages: [{ type: "heartbeatResp", from, to: leaderName, term: s.term }],
      });
    const post = async (body: string, headers: Record<string, string>) => {
      const res = await fetch(`${leader.url}/internal/raft`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body,
      });
      await res.body?.cancel();
      return res.status;
    };
    const credential = JSON.parse(Deno.readTextFileSync(`${other.dataDir}/node.json`))
      .peerCredential as string;

    await step(t, "members advertise http:// and replicate", async () => {
      assert(leader.url.startsWith("http://") && other.url.startsWith("http://"));
      const seen = await api<Status>(`${other.url}/api/v1/cluster?local=true`, { token });
      assertEquals(seen.body.members.length, 2);
    });

    await step(t, "a member's own credential is accepted (control)", async () => {
      assertEquals(
        await post(beat(other.name), {
          "x-novactl-peer-credential": `${other.name}:${credential}`,
        }),
        200,
      );
    });

    await step(t, "no credential, a wrong one, or a forged sender get 403", async () => {
      assertEquals(await post(beat(other.name), {}), 403);
      assertEquals(
        await post(beat(other.name), { "x-novactl-peer-credential": `${other.name}:nvp_wrong` }),
        403,
      );
      assertEquals(
        await post(beat(leaderName), {
          "x-novactl-peer-credential": `${other.name}:${credential}`,
        }),
        403,
      );
      // Someone else's name with this credential: it is not theirs.
      assertEquals(
        await post(beat(leaderName), {
          "x-novactl-peer-credential": `${leaderName}:${credential}`,
        }),
        403,
      );
    });
  } finally {
    await cluster.stop();
  }
});
