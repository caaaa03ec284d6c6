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

async function tlsFor(name: string, ca: { certPem: string; keyPem: string }): Promise<NodeTls> {
  const { keyPem, csrPem } = await createNodeKeyAndCsr(name, ["127.0.0.1"]);
  const certPem = await signCsr(ca, csrPem, { name, sans: ["127.0.0.1"] });
  return { name, caPem: ca.certPem, certPem, keyPem, fingerprint: fingerprint(certPem) };
}

/** Resolves true once the peer closes the connection (a read ends or fails). */
function closedBy(conn: Deno.Conn): Promise<true> {
  return conn.read(new Uint8Array(1024)).then(() => true, () => true);
}

testWithTimeout({
  name: "ApiServer: connections beyond the cap and idle ones past the header timeout are closed",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const server = await ApiServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    insecure: true,
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

testWithTimeout({
  name: "ApiServer: TLS clients are told apart by certificate (none, the CA's, another CA's)",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const ca = await createCa("c1");
  const server = await ApiServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    insecure: false,
    tls: await tlsFor("srv", ca),
  });
  server.serveWith((_req, env) => Response.json(env.tlsPeer));
  const url = `https://127.0.0.1:${server.port}/`;
  const ask = async (opts: { cert?: string; key?: string }) => {
    const client = Deno.createHttpClient({ caCerts: [ca.certPem], ...opts });
    try {
      return await (await fetch(url, { client })).json();
    } finally {
      client.close();
    }
  };
  try {
    assertEquals(await ask({}), null);
    const member = await tlsFor("n2", ca);
    const seen = await ask({ cert: member.certPem, key: member.keyPem });
    assertEquals(seen, { authorized: true, commonName: "n2", fingerprint: member.fingerprint });
    const stranger = await tlsFor("n2", await createCa("c1"));
    const other = await ask({ cert: stranger.certPem, key: stranger.keyPem });
    assertEquals(other.authorized, false);
    assertEquals(other.fingerprint, stranger.fingerprint);
  } finally {
    await server.shutdown();
  }
});
