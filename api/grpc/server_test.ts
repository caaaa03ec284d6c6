/**
 * The gRPC port's listener over real TLS: the connection guard's limits (a slowloris, a
 * connection that never handshakes, an idle h2 connection, the cap), both protocols by ALPN
 * (h2 for gRPC, HTTP/1.1 for Connect), and a certificate switch as the main port's.
 */
import { Buffer } from "node:buffer";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { eventually } from "../../tests/support/api.ts";
import {
  createCa,
  createNodeKeyAndCsr,
  fingerprint,
  type NodeTls,
  signCsr,
} from "../../core/pki/mod.ts";
import type { ConnectionLimits } from "../connection_guard.ts";
import { GrpcServer } from "./server.ts";

const PROTO = new URL("./novactl/v1/novactl.proto", import.meta.url).pathname;
const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

async function tlsFor(name: string, ca: { certPem: string; keyPem: string }): Promise<NodeTls> {
  const { keyPem, csrPem } = await createNodeKeyAndCsr(name, ["127.0.0.1", "localhost"]);
  const certPem = await signCsr(ca, csrPem, { name, sans: ["127.0.0.1", "localhost"] });
  return { name, caPem: ca.certPem, certPem, keyPem, fingerprint: fingerprint(certPem) };
}

/** A REST app answering every VM list with one VM. */
const app = () => Response.json({ vms: [{ name: "vm1", uuid: "u1" }] });

function listen(tls: NodeTls, limits: ConnectionLimits) {
  return GrpcServer.listen({ hostname: "127.0.0.1", port: 0, tls, app, limits });
}

// deno-lint-ignore no-explicit-any
type Client = any;
const pkg = grpc.loadPackageDefinition(
  protoLoader.loadSync(PROTO, { defaults: true, oneofs: true }),
  // deno-lint-ignore no-explicit-any
) as any;

function vmClient(port: number, caPem: string): Client {
  return new pkg.novactl.v1.VmService(
    `127.0.0.1:${port}`,
    grpc.credentials.createSsl(Buffer.from(caPem)),
    { "grpc.ssl_target_name_override": "localhost" },
  );
}

function listVms(client: Client): Promise<{ vms: { name: string }[] }> {
  return new Promise((resolve, reject) =>
    client.ListVms(
      {},
      new grpc.Metadata(),
      (err: Error | null, res: { vms: { name: string }[] }) => err ? reject(err) : resolve(res),
    )
  );
}

/** Resolves true once the peer closes the connection (what it sends before is read and dropped). */
async function closedBy(conn: Deno.Conn): Promise<true> {
  const buf = new Uint8Array(16 << 10);
  try {
    while (await conn.read(buf) !== null) { /* the server's SETTINGS, a GOAWAY */ }
  } catch { /* reset */ }
  return true;
}

function closeQuietly(conn: Deno.Conn) {
  try {
    conn.close();
  } catch { /* closed */ }
}

testWithTimeout({
  name:
    "GrpcServer: an h2 slowloris and a connection that never handshakes are cut at the header timeout",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const server = await listen(await tlsFor("n1", ca), {
    headersTimeoutMs: 400,
    idleTimeoutMs: 10 * MINUTE,
    maxConnections: 10,
  });
  try {
    const loris = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: server.port,
      caCerts: [ca.certPem],
      alpnProtocols: ["h2"],
    });
    assertEquals((await loris.handshake()).alpnProtocol, "h2");
    // The client preface and SETTINGS, then a request's HEADERS frame (1,000 bytes long) a
    // byte every 100 ms: its headers never arrive whole.
    const enc = new TextEncoder();
    await loris.write(enc.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    await loris.write(new Uint8Array([0, 0, 0, 4, 0, 0, 0, 0, 0]));
    await loris.write(new Uint8Array([0, 0x03, 0xe8, 1, 4, 0, 0, 0, 1]));
    let sent = 0;
    let open = true;
    closedBy(loris).then(() => open = false);
    while (open && sent < 40) {
      await loris.write(new Uint8Array([0x40])).catch(() => open = false);
      sent++;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert(!open, `the slowloris connection was still open after ${sent} bytes`);
    closeQuietly(loris);
    const mute = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    assert(await closedBy(mute));
    closeQuietly(mute);
  } finally {
    await server.close();
  }
});

testWithTimeout({
  name: "GrpcServer: an idle h2 connection is closed past the idle timeout; the client reconnects",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const server = await listen(await tlsFor("n1", ca), {
    headersTimeoutMs: 10 * MINUTE,
    idleTimeoutMs: 300,
    maxConnections: 10,
  });
  const client = vmClient(server.port, ca.certPem);
  try {
    assertEquals((await listVms(client)).vms.map((v) => v.name), ["vm1"]);
    // The client keeps its channel open: only the guard's idle timer can close it.
    await eventually(
      "the idle connection closed",
      () => Promise.resolve(server.openConnections === 0 || undefined),
    );
    assertEquals((await listVms(client)).vms.map((v) => v.name), ["vm1"]);
  } finally {
    client.close();
    await server.close();
  }
});

testWithTimeout({
  name: "GrpcServer: an event stream quiet for longer than the idle timeout is not cut",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  // The REST event stream: one event, a quiet spell of 1.2 s (four idle timeouts), another.
  const sse = () =>
    new Response(
      new ReadableStream({
        async start(ctl) {
          const event = (id: string) =>
            ctl.enqueue(new TextEncoder().encode(`id: ${id}\ndata: {"id":"${id}"}\n\n`));
          event("1-0");
          await new Promise((r) => setTimeout(r, 1_200));
          event("2-0");
        },
      }),
      { headers: { "content-type": "text/event-stream" } },
    );
  const server = await GrpcServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: await tlsFor("n1", ca),
    app: sse,
    limits: { headersTimeoutMs: 300, idleTimeoutMs: 300, maxConnections: 10 },
  });
  const events = new pkg.novactl.v1.EventService(
    `127.0.0.1:${server.port}`,
    grpc.credentials.createSsl(Buffer.from(ca.certPem)),
    { "grpc.ssl_target_name_override": "localhost" },
  );
  try {
    const ids: string[] = [];
    const watch = events.WatchEvents({}, new grpc.Metadata());
    watch.on("data", (item: { event?: { id: string } }) => ids.push(item.event?.id ?? "?"));
    const ended = new Promise<string>((resolve) => {
      watch.on("error", (e: { details: string }) => resolve(`error: ${e.details}`));
      watch.on("end", () => resolve("end"));
    });
    await eventually("the second event", () => Promise.resolve(ids.length >= 2 || undefined));
    assertEquals(ids, ["1-0", "2-0"]);
    watch.cancel();
    await ended;
  } finally {
    events.close();
    await server.close();
  }
});

testWithTimeout({
  name: "GrpcServer: connections beyond the cap are closed at once",
  ...opts,
}, async () => {
  const server = await listen(await tlsFor("n1", await createCa("c1")), {
    headersTimeoutMs: 10 * MINUTE,
    idleTimeoutMs: 10 * MINUTE,
    maxConnections: 2,
  });
  const open = () => Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const a = await open();
    const b = await open();
    const c = await open();
    const first = await Promise.race([
      closedBy(c).then(() => "c"),
      closedBy(a).then(() => "a"),
      closedBy(b).then(() => "b"),
    ]);
    assertEquals(first, "c");
    for (const conn of [a, b, c]) closeQuietly(conn);
  } finally {
    await server.close();
  }
});

testWithTimeout({
  name: "GrpcServer: gRPC over h2 and Connect over HTTP/1.1; a switched certificate is served",
  ...opts,
}, async () => {
  const ca1 = await createCa("c1");
  const ca2 = await createCa("c2");
  const server = await listen(await tlsFor("n1", ca1), {
    headersTimeoutMs: 10 * MINUTE,
    idleTimeoutMs: 10 * MINUTE,
    maxConnections: 10,
  });
  const port = server.port;
  const connectList = async (caPem: string) => {
    const client = Deno.createHttpClient({ caCerts: [caPem], http2: false });
    try {
      const res = await fetch(`https://127.0.0.1:${port}/novactl.v1.VmService/ListVms`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
        client,
      });
      return (await res.json() as { vms: { name: string }[] }).vms.map((v) => v.name);
    } finally {
      client.close();
    }
  };
  try {
    const one = vmClient(port, ca1.certPem);
    assertEquals((await listVms(one)).vms.map((v) => v.name), ["vm1"]);
    one.close();
    assertEquals(await connectList(ca1.certPem), ["vm1"]);

    await server.useTls(await tlsFor("n1", ca2));
    assertEquals(server.port, port, "same port");
    const two = vmClient(port, ca2.certPem);
    assertEquals((await listVms(two)).vms.map((v) => v.name), ["vm1"]);
    two.close();
    assertEquals(await connectList(ca2.certPem), ["vm1"]);
    // The old certificate is no longer presented to new connections.
    const old = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [ca1.certPem] });
    assertEquals(await old.handshake().then(() => "trusted", () => "refused"), "refused");
    closeQuietly(old);
  } finally {
    await server.close();
  }
});
