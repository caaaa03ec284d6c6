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

testWithTimeout({
  name: "ApiServer: signed peer requests reach the handler with their proof, others with none",
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
  name: "ApiServer: a listener started before its certificate serves the real one after useTls",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const n1 = await tlsFor("n1", ca);
  const server = await ApiServer.listen({ hostname: "127.0.0.1", port: 0, insecure: false });
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
  { name: "ApiServer: a plain listener reports the client's address", ...opts },
  async () => {
    const server = await ApiServer.listen({ hostname: "127.0.0.1", port: 0, insecure: true });
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
