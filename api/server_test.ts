import { assert, assertEquals } from "../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";
import { ApiServer } from "./server.ts";
import {
  createCa,
  createNodeKeyAndCsr,
  fingerprint,
  type NodeTls,
  signCsr,
} from "../core/pki/mod.ts";
import { NODE_CERT_PATH, RequestSigner } from "../core/peer/signature.ts";

async function tlsFor(name: string, ca: { certPem: string; keyPem: string }): Promise<NodeTls> {
  const { keyPem, csrPem } = await createNodeKeyAndCsr(name, ["127.0.0.1"]);
  const certPem = await signCsr(ca, csrPem, { name, sans: ["127.0.0.1"] });
  return { name, caPem: ca.certPem, certPem, keyPem, fingerprint: fingerprint(certPem) };
}

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

for (const kind of ["deno", "node"] as const) {
  testWithTimeout({
    name:
      `ApiServer (${kind}): signed peer requests reach the handler with their proof, others with none`,
    ...opts,
  }, async () => {
    const ca = await createCa("c1");
    const n1 = await tlsFor("n1", ca);
    const n2 = await tlsFor("n2", ca);
    const server = await ApiServer.listen({
      hostname: "127.0.0.1",
      port: 0,
      insecure: false,
      tls: n1,
    });
    const url = `https://127.0.0.1:${server.port}`;
    await server.useTls(n1, url);
    server.serveWith(async (req, env) =>
      Response.json({ peer: env.tlsPeer, body: await req.text(), insecure: env.insecure })
    );
    const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
    const signer = new RequestSigner("n2", n2, async (origin) => {
      const res = await fetch(origin + NODE_CERT_PATH, { client });
      return await res.text();
    });
    const call = async (signed: boolean, body = "hello") => {
      const target = `${url}/internal/raft`;
      const headers = signed ? await signer.headers("POST", target, body) : {};
      const res = await fetch(target, { method: "POST", headers, body, client });
      return await res.json();
    };
    try {
      assertEquals(await call(true), {
        peer: { authorized: true, commonName: "n2", fingerprint: n2.fingerprint },
        body: "hello",
        insecure: false,
      });
      assertEquals(await call(false), { peer: null, body: "hello", insecure: false });
    } finally {
      client.close();
      await server.shutdown();
    }
  });

  testWithTimeout({
    name: `ApiServer (${kind}): a listener started before its certificate serves the real one`,
    ...opts,
  }, async () => {
    const ca = await createCa("c1");
    const n1 = await tlsFor("n1", ca);
    const server = await ApiServer.listen({
      hostname: "127.0.0.1",
      port: 0,
      insecure: false,
      kind,
    });
    const port = server.port;
    const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
    try {
      // The throwaway certificate is not the cluster CA's: a client pinning the CA refuses it.
      const before = await fetch(`https://127.0.0.1:${port}/healthz`, { client }).then(
        () => "trusted",
        () => "refused",
      );
      assertEquals(before, "refused");
      await server.useTls(n1, `https://127.0.0.1:${port}`);
      assertEquals(server.port, port, "same port");
      server.serveWith(() => new Response("ok"));
      const res = await fetch(`https://127.0.0.1:${port}/healthz`, { client });
      assertEquals(await res.text(), "ok");
    } finally {
      client.close();
      await server.shutdown();
    }
  });

  testWithTimeout(
    { name: `ApiServer (${kind}): a plain listener reports the client's address`, ...opts },
    async () => {
      const server = await ApiServer.listen({
        hostname: "127.0.0.1",
        port: 0,
        insecure: true,
        kind,
      });
      server.serveWith((_req, env) => Response.json(env));
      try {
        const res = await fetch(`http://127.0.0.1:${server.port}/x`);
        assertEquals(await res.json(), { remoteAddr: "127.0.0.1", tlsPeer: null, insecure: true });
        assert(server.insecure);
      } finally {
        await server.shutdown();
      }
    },
  );
}

/** Resolves true once the peer closes the connection (a read ends or fails). */
function closedBy(conn: Deno.Conn): Promise<true> {
  return conn.read(new Uint8Array(1024)).then(() => true, () => true);
}

testWithTimeout({
  name:
    "ApiServer (node): connections beyond the cap and idle ones past the header timeout are closed",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const server = await ApiServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    insecure: true,
    kind: "node",
    limits: { headersTimeoutMs: 300, idleTimeoutMs: 300, maxConnections: 2 },
  });
  server.serveWith(() => new Response("ok"));
  const open = () => Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const a = await open();
    const b = await open();
    const c = await open();
    // The third is over the cap: closed at once, before any timeout could matter.
    const first = await Promise.race([
      closedBy(c).then(() => "c"),
      closedBy(a).then(() => "a"),
      closedBy(b).then(() => "b"),
    ]);
    assertEquals(first, "c");
    // a and b never send a request: the header timer closes them too.
    assert(await closedBy(a));
    assert(await closedBy(b));
    for (const conn of [a, b, c]) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  } finally {
    await server.shutdown();
  }
});
