import { assert, assertEquals } from "../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";
import { ApiServer } from "./server.ts";
import { noDelayOfSockets } from "./tcp_sockets.ts";
import { registry } from "../core/metrics/mod.ts";
import {
  createCa,
  createNodeKeyAndCsr,
  fingerprint,
  type NodeTls,
  signCsr,
} from "../core/pki/mod.ts";
import { NODE_CERT_PATH, PEER_SIGNATURE_HEADER, RequestSigner } from "../core/peer/signature.ts";

async function tlsFor(name: string, ca: { certPem: string; keyPem: string }): Promise<NodeTls> {
  const { keyPem, csrPem } = await createNodeKeyAndCsr(name, ["127.0.0.1"]);
  const certPem = await signCsr(ca, csrPem, { name, sans: ["127.0.0.1"] });
  return { name, caPem: ca.certPem, certPem, keyPem, fingerprint: fingerprint(certPem) };
}

/** A TLS listener presenting `tls`, accepting peer requests signed for its URL. */
async function tlsServer(tls: NodeTls) {
  const server = await ApiServer.listen({ hostname: "127.0.0.1", port: 0, insecure: false, tls });
  const url = `https://127.0.0.1:${server.port}`;
  await server.useTls(tls, url);
  return { server, url };
}

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

/** A TLS connection to a test listener on loopback, trusting `caPem`. */
function connectTlsTo(port: number, caPem: string): Promise<Deno.TlsConn> {
  return Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [caPem] });
}

testWithTimeout({
  name: "ApiServer: signed peer requests reach the handler with their proof, others with none",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const n1 = await tlsFor("n1", ca);
  const n2 = await tlsFor("n2", ca);
  const { server, url } = await tlsServer(n1);
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
  name: "ApiServer: a listener started before its certificate serves the real one",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const n1 = await tlsFor("n1", ca);
  const server = await ApiServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    insecure: false,
  });
  const port = server.port;
  const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
  // A connection open while the certificate changes: the port is bound again under it.
  const early = await Deno.connect({ hostname: "127.0.0.1", port });
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
    // The connection made before keeps the certificate it was accepted with.
    const tls = await Deno.startTls(early, { hostname: "127.0.0.1", caCerts: [ca.certPem] });
    const handshake = await tls.handshake().then(() => "trusted", () => "refused");
    assertEquals(handshake, "refused");
  } finally {
    try {
      early.close();
    } catch { /* handed to startTls, which closed it */ }
    client.close();
    await server.shutdown();
  }
});

testWithTimeout(
  { name: "ApiServer: a plain listener reports the client's address", ...opts },
  async () => {
    const server = await ApiServer.listen({
      hostname: "127.0.0.1",
      port: 0,
      insecure: true,
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

/** Resolves true once the peer closes the connection (a read ends or fails). */
function closedBy(conn: Deno.Conn): Promise<true> {
  return conn.read(new Uint8Array(1024)).then(() => true, () => true);
}

/** novactl_http_connections_refused_total as /metrics would show it. */
async function refusedCount(): Promise<number> {
  const text = await registry.metrics();
  return Number(/^novactl_http_connections_refused_total (\d+)/m.exec(text)?.[1] ?? NaN);
}

for (const mode of ["plain", "tls"] as const) {
  testWithTimeout({
    name:
      `ApiServer (${mode}): connections beyond the cap and idle ones past the header timeout are closed`,
    timeoutMs: 2 * MINUTE,
    sanitizeOps: false,
    sanitizeResources: false,
  }, async () => {
    // Over TLS the connections never start their handshake: Deno would keep their sockets.
    const server = await ApiServer.listen({
      hostname: "127.0.0.1",
      port: 0,
      insecure: mode === "plain",
      tls: mode === "tls" ? await tlsFor("n1", await createCa("c1")) : null,
      limits: { headersTimeoutMs: 300, idleTimeoutMs: 300, maxConnections: 2 },
    });
    server.serveWith(() => new Response("ok"));
    const open = () => Deno.connect({ hostname: "127.0.0.1", port: server.port });
    const refusedBefore = await refusedCount();
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
      assertEquals(await refusedCount() - refusedBefore, 1, "the refusal is counted");
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
}

for (const mode of ["tls", "plain"] as const) {
  testWithTimeout({
    name:
      `ApiServer (${mode}): a slowloris request is cut at the header timeout; a slow answer is not`,
    ...opts,
  }, async () => {
    const ca = await createCa("c1");
    const n1 = await tlsFor("n1", ca);
    const server = await ApiServer.listen({
      hostname: "127.0.0.1",
      port: 0,
      insecure: mode === "plain",
      tls: n1,
      limits: { headersTimeoutMs: 400, idleTimeoutMs: 400, maxConnections: 10 },
    });
    const base = `${mode === "tls" ? "https" : "http"}://127.0.0.1:${server.port}`;
    await server.useTls(n1, base);
    // The handler takes longer than both timeouts: a request in flight is never cut.
    server.serveWith(async () => {
      await new Promise((r) => setTimeout(r, 1_200));
      return new Response("slow but whole");
    });
    const enc = new TextEncoder();
    const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
    const connect = () =>
      mode === "tls"
        ? connectTlsTo(server.port, ca.certPem)
        : Deno.connect({ hostname: "127.0.0.1", port: server.port });
    try {
      const loris = await connect();
      await loris.write(enc.encode("GET / HTTP/1.1\r\nHost: x\r\n"));
      let lines = 0;
      let open = true;
      closedBy(loris).then(() => open = false);
      // One header line every 100 ms, never the blank line that ends them.
      while (open && lines < 40) {
        await new Promise((r) => setTimeout(r, 100));
        await loris.write(enc.encode(`X-Line-${lines++}: 1\r\n`)).catch(() => open = false);
      }
      assert(!open, `the slowloris connection was still open after ${lines} header lines`);
      try {
        loris.close();
      } catch { /* closed */ }
      // A TCP connection that never even starts its TLS handshake is on the same clock.
      const mute = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      const outcome = await Promise.race([
        closedBy(mute).then(() => "closed"),
        new Promise((r) => setTimeout(() => r("still open after 30 s"), 30_000)),
      ]);
      assertEquals(outcome, "closed");
      mute.close();

      const res = await fetch(`${base}/`, { client });
      assertEquals(await res.text(), "slow but whole");
    } finally {
      client.close();
      await server.shutdown();
    }
  });
}

testWithTimeout({
  name: "ApiServer: a keep-alive connection is closed once idle past the idle timeout",
  ...opts,
}, async () => {
  const server = await ApiServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    insecure: true,
    limits: { headersTimeoutMs: 10 * MINUTE, idleTimeoutMs: 300, maxConnections: 10 },
  });
  server.serveWith(() => new Response("ok"));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    assert(n && new TextDecoder().decode(buf.subarray(0, n)).startsWith("HTTP/1.1 200"));
    // Keep-alive: the server keeps it open for the next request, until the idle timer.
    const outcome = await Promise.race([
      closedBy(conn).then(() => "closed"),
      new Promise((r) => setTimeout(() => r("still open after 30 s"), 30_000)),
    ]);
    assertEquals(outcome, "closed");
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
    await server.shutdown();
  }
});

testWithTimeout({
  name:
    "ApiServer: every keep-alive request is answered, after large responses too (node:https stalled)",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const n1 = await tlsFor("n1", ca);
  const server = await ApiServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    insecure: false,
    tls: n1,
  });
  await server.useTls(n1, `https://127.0.0.1:${server.port}`);
  // Streamed from a file, as peers fetch image blobs (where the stall hit a VM start).
  const bigFile = await Deno.makeTempFile();
  const bigBytes = 8 << 20;
  // Random bytes: the guard reuses one buffer per connection, a chunk overwritten before TLS
  // took it would show in the digest.
  const content = new Uint8Array(bigBytes);
  for (let off = 0; off < bigBytes; off += 65_536) {
    crypto.getRandomValues(content.subarray(off, off + 65_536));
  }
  await Deno.writeFile(bigFile, content);
  const expected = await sha256(content);
  server.serveWith(async (req) => {
    if (new URL(req.url).pathname !== "/big") return new Response(JSON.stringify({ ok: true }));
    const file = await Deno.open(bigFile);
    const { size } = await file.stat();
    return new Response(file.readable, { headers: { "content-length": String(size) } });
  });
  const client = Deno.createHttpClient({ caCerts: [ca.certPem], http2: false });
  /** A request that makes no progress for 10 s counts as unanswered (a stall, not slowness). */
  const get = async (path: string) => {
    const ctl = new AbortController();
    let timer = setTimeout(() => ctl.abort(), 10_000);
    try {
      const res = await fetch(`https://127.0.0.1:${server.port}${path}`, {
        client,
        signal: ctl.signal,
      });
      const chunks: Uint8Array[] = [];
      for await (const chunk of res.body!) {
        chunks.push(chunk);
        clearTimeout(timer);
        timer = setTimeout(() => ctl.abort(), 10_000);
      }
      const body: Uint8Array<ArrayBuffer> = new Uint8Array(
        chunks.reduce((n, c) => n + c.length, 0),
      );
      chunks.reduce((off, c) => (body.set(c, off), off + c.length), 0);
      return body;
    } catch (err) {
      throw new Error(`GET ${path} stalled: ${err}`);
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    for (let i = 0; i < 40; i++) assertEquals(await sha256(await get("/big")), expected, `#${i}`);
    for (let i = 0; i < 1_000; i++) assertEquals((await get("/small")).length, 11);
  } finally {
    client.close();
    await server.shutdown();
    await Deno.remove(bigFile);
  }
});

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  return Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

testWithTimeout({
  name:
    "ApiServer: an answer that leaves a long body unread ends its connection cleanly: the next request works, a sender that goes on is stopped",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const { server, url } = await tlsServer(await tlsFor("n1", ca));
  // As the API's body caps do: a declared or streamed body over 1 MiB is refused unread.
  server.serveWith(async (req) => {
    const long = req.headers.has("transfer-encoding") ||
      Number(req.headers.get("content-length")) > 1 << 20;
    if (long) return Response.json({ error: "too large" }, { status: 413 });
    return Response.json({ bytes: (await req.text()).length });
  });
  const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
  const post = async (bytes: number) => {
    const res = await fetch(`${url}/x`, { method: "POST", body: "a".repeat(bytes), client });
    return { status: res.status, body: await res.json() };
  };
  /** Sends a 200 MiB body whatever it hears; what it heard, and how much it got to send. */
  const stubborn = async () => {
    const conn = await connectTlsTo(server.port, ca.certPem);
    const chunk = new Uint8Array(1 << 20).fill(0x20);
    let mib = 0;
    const sending = (async () => {
      try {
        await writeAll(conn, `POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: ${200 << 20}\r\n\r\n`);
        for (; mib < 200; mib++) await writeAll(conn, chunk);
      } catch { /* stopped by the server */ }
    })();
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf).catch(() => null);
    await sending;
    try {
      conn.close();
    } catch { /* closed */ }
    return { head: new TextDecoder().decode(buf.subarray(0, n ?? 0)).split("\r\n")[0], mib };
  };
  try {
    // fetch sends the whole 5 MB, hears 413, then its next request must not land on a
    // connection whose leftovers are being dropped.
    for (let i = 0; i < 3; i++) {
      assertEquals((await post(5_000_000)).status, 413);
      assertEquals(await post(900_000), { status: 200, body: { bytes: 900_000 } });
      assertEquals(await post(10), { status: 200, body: { bytes: 10 } });
    }
    // A client that sent its whole body is told not to reuse the connection.
    const polite = await connectTlsTo(server.port, ca.certPem);
    try {
      const body = "a".repeat(5_000_000);
      await writeAll(
        polite,
        `POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: ${body.length}\r\n\r\n`,
      );
      await writeAll(polite, body);
      const buf = new Uint8Array(4096);
      const head = new TextDecoder().decode(buf.subarray(0, (await polite.read(buf)) ?? 0));
      assert(head.startsWith("HTTP/1.1 413"), head);
      assert(/\r\nconnection: close\r\n/i.test(head), `no "connection: close": ${head}`);
    } finally {
      polite.close();
    }
    const s = await stubborn();
    assert(s.head.startsWith("HTTP/1.1 413"), `the answer reached the sender: "${s.head}"`);
    assert(s.mib < 64, `a sender that goes on is stopped: it sent ${s.mib} MiB`);
  } finally {
    client.close();
    await server.shutdown();
  }
});

async function writeAll(conn: Deno.Conn, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** One HTTP/1.1 request on an open connection; the answer's body (JSON). */
async function exchange(
  conn: Deno.Conn,
  path: string,
  headers: Record<string, string>,
  body: string,
): Promise<unknown> {
  const head = [
    `POST ${path} HTTP/1.1`,
    "host: 127.0.0.1",
    `content-length: ${new TextEncoder().encode(body).length}`,
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ].join("\r\n");
  await conn.write(new TextEncoder().encode(`${head}\r\n\r\n${body}`));
  let text = "";
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("connection closed");
    text += new TextDecoder().decode(buf.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    if (end < 0) continue;
    const len = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
    if (text.length >= end + 4 + len) return JSON.parse(text.slice(end + 4, end + 4 + len));
  }
}

testWithTimeout({
  name:
    "ApiServer: a connection keeps the peer its first signed request proved; anyone else is verified in full",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const n1 = await tlsFor("n1", ca);
  const n2 = await tlsFor("n2", ca);
  const n3 = await tlsFor("n3", ca);
  const { server, url } = await tlsServer(n1);
  server.serveWith(async (req, env) =>
    Response.json({
      peer: env.tlsPeer?.commonName ?? null,
      ok: env.tlsPeer?.authorized ?? false,
      body: await req.text(),
    })
  );
  const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
  const certOf = async (origin: string) =>
    await (await fetch(origin + NODE_CERT_PATH, { client })).text();
  const as2 = new RequestSigner("n2", n2, certOf);
  const as3 = new RequestSigner("n3", n3, certOf);
  const signed = (signer: RequestSigner, body: string) =>
    signer.headers("POST", `${url}/internal/raft`, body);
  /** The headers with the MAC replaced: what only a forger would send. */
  const forged = (h: Record<string, string>) => {
    const sig = h[PEER_SIGNATURE_HEADER].split(" ");
    sig[4] = "A".repeat(sig[4].length);
    return { ...h, [PEER_SIGNATURE_HEADER]: sig.join(" ") };
  };
  const open = () => connectTlsTo(server.port, ca.certPem);
  const a = await open();
  const b = await open();
  try {
    // A fresh connection: a forged MAC is refused.
    assertEquals(await exchange(b, "/internal/raft", forged(await signed(as2, "x")), "x"), {
      peer: "n2",
      ok: false,
      body: "x",
    });
    // Proven as n2 by a good signature; later n2 requests on it keep that proof.
    assertEquals(await exchange(a, "/internal/raft", await signed(as2, "one"), "one"), {
      peer: "n2",
      ok: true,
      body: "one",
    });
    assertEquals(await exchange(a, "/internal/raft", await signed(as2, "two"), "two"), {
      peer: "n2",
      ok: true,
      body: "two",
    });
    // The proof belongs to that connection alone: on another, a forged n2 is still refused.
    assertEquals(
      await exchange(b, "/internal/raft", forged(await signed(as2, "w")), "w"),
      { peer: "n2", ok: false, body: "w" },
    );
    // Another node's name on that connection is checked in full: forged is refused, genuine passes.
    assertEquals(await exchange(a, "/internal/raft", forged(await signed(as3, "y")), "y"), {
      peer: "n3",
      ok: false,
      body: "y",
    });
    assertEquals(await exchange(a, "/internal/raft", await signed(as3, "z"), "z"), {
      peer: "n3",
      ok: true,
      body: "z",
    });
    // Unsigned on a proven connection: a client, with no peer identity.
    assertEquals(await exchange(a, "/x", {}, "plain"), { peer: null, ok: false, body: "plain" });
  } finally {
    a.close();
    b.close();
    client.close();
    await server.shutdown();
  }
});

testWithTimeout({
  name:
    "ApiServer: TLS connections are accepted with TCP_NODELAY (an answer's last TLS record is not held for the delayed ACK)",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const n1 = await tlsFor("n1", ca);
  // Started with the throwaway certificate, then the node's own: both listeners set it.
  const server = await ApiServer.listen({ hostname: "127.0.0.1", port: 0, insecure: false });
  await server.useTls(n1, `https://127.0.0.1:${server.port}`);
  server.serveWith(() => new Response("x".repeat(20_000)));
  const conns = [
    await connectTlsTo(server.port, ca.certPem),
    await connectTlsTo(server.port, ca.certPem),
  ];
  try {
    for (const c of conns) await c.handshake();
    const sockets = noDelayOfSockets(server.port);
    // The listener and the two accepted connections.
    assertEquals(sockets.size, 3, `sockets on the port: ${[...sockets]}`);
    assertEquals([...sockets.values()], [true, true, true]);
  } finally {
    for (const c of conns) c.close();
    await server.shutdown();
  }
});

testWithTimeout({
  name: "ApiServer: a WebSocket stays open past the idle timeout (the guard's idle clock stops)",
  ...opts,
}, async () => {
  const server = await ApiServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    insecure: true,
    limits: { headersTimeoutMs: 10 * MINUTE, idleTimeoutMs: 200, maxConnections: 10 },
  });
  server.serveWith((req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(`echo ${e.data}`);
    return response;
  });
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/`);
  const got: string[] = [];
  const closed = new Promise<void>((r) => ws.onclose = () => r());
  try {
    await new Promise((r) => ws.onopen = r);
    ws.onmessage = (e) => got.push(String(e.data));
    // Quiet for many idle timeouts: a plain keep-alive connection is closed meanwhile (above).
    await new Promise((r) => setTimeout(r, 1_500));
    assertEquals(ws.readyState, WebSocket.OPEN, "closed by the idle clock");
    ws.send("still here");
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        if (got.length) {
          clearInterval(t);
          resolve();
        } else if (ws.readyState !== WebSocket.OPEN) {
          clearInterval(t);
          reject(new Error("closed"));
        }
      }, 20);
    });
    assertEquals(got, ["echo still here"]);
  } finally {
    ws.close();
    await closed;
    await server.shutdown();
  }
});
