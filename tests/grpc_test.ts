/**
 * The gRPC API (api/grpc/) driven by a real gRPC client (@grpc/grpc-js, the proto loaded by
 * @grpc/proto-loader) against real node processes over TLS (h2 by ALPN, the cluster CA
 * trusted), on simulated hosts: a VM's round trip through a follower (forwarded to the leader
 * as REST is), auth (no token: Unauthenticated; a viewer writing: PermissionDenied), a
 * validation error naming its field, a streamed event and a resumed stream; and calls in the
 * Connect protocol (plain JSON POST) and in gRPC-Web (the browser's transport over fetch).
 */
import { Buffer } from "node:buffer";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { requestJson } from "../bench/lib/util.ts";
import { importTinyKernel, simulatedHostArgs } from "../bench/lib/simulated.ts";
import { eventually } from "./support/api.ts";
import { plainStruct } from "../api/grpc/testing.ts";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { VmService } from "../api/grpc/gen/novactl/v1/novactl_pb.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

const PROTO = new URL("../api/grpc/novactl/v1/novactl.proto", import.meta.url).pathname;

// deno-lint-ignore no-explicit-any
type Client = any;
interface GrpcError {
  code: number;
  details: string;
  metadata: grpc.Metadata;
}

/** A unary call as a promise: its answer, or the gRPC error it ended with. */
function unary<T>(client: Client, method: string, req: unknown, md: grpc.Metadata): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](req, md, (err: GrpcError | null, res: T) => err ? reject(err) : resolve(res))
  );
}

/** The gRPC error a call ends with (the test fails when it succeeds). */
async function failure(call: Promise<unknown>): Promise<GrpcError> {
  try {
    const r = await call;
    throw new Error(`expected a gRPC error, got ${JSON.stringify(r)}`);
  } catch (err) {
    if (typeof (err as GrpcError).code !== "number") throw err;
    return err as GrpcError;
  }
}

/** `probe`'s first answer that is neither undefined nor false, polled until `timeoutMs`. */
function until<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  opts: { timeoutMs: number; what: string },
): Promise<T> {
  return eventually(opts.what, async () => await probe(), opts.timeoutMs);
}

function bearer(token: string): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("authorization", `Bearer ${token}`);
  return md;
}

interface Vm {
  name: string;
  node: string;
  state: string;
  desired: string;
  record: Record<string, never>;
}
interface WatchItem {
  event?: { id: string; type: string; action: string; resource: string };
  gap?: unknown;
}

testWithTimeout({
  name: "gRPC API: a real gRPC client over TLS: VM round trip, auth, validation, events, Connect",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const cluster = new NovactlCluster({
    extraNodeArgs: [...simulatedHostArgs(64, 262_144), "--grpc-port", "0"],
    // Short enough to see a mute connection cut; any real client sends its headers at once.
    env: { NOVACTL_HEADERS_TIMEOUT_MS: "1500" },
  });
  const clients: Client[] = [];
  const streams: grpc.ClientReadableStream<WatchItem>[] = [];
  try {
    await cluster.start(3);
    await importTinyKernel(cluster, "tiny");
    const leader = await cluster.leaderName();
    const follower = cluster.nodes.find((n) => n.name !== leader)!;
    const grpcAddress = async (dataDir: string) => {
      const report = JSON.parse(await Deno.readTextFile(`${dataDir}/listen.json`));
      assert(typeof report.grpc === "string", `listen.json has no grpc: ${JSON.stringify(report)}`);
      return report.grpc as string;
    };
    const onFollower = await grpcAddress(follower.dataDir);
    const onLeader = await grpcAddress(cluster.nodes.find((n) => n.name === leader)!.dataDir);

    const pkg = grpc.loadPackageDefinition(
      protoLoader.loadSync(PROTO, { keepCase: false, defaults: true, oneofs: true }),
      // deno-lint-ignore no-explicit-any
    ) as any;
    const ca = await Deno.readFile(cluster.caFile);
    const credentials = grpc.credentials.createSsl(Buffer.from(ca));
    // The node's certificate names localhost (and its addresses); Deno's TLS refuses an IP as
    // the server name, so the name checked is localhost.
    const client = (service: string, address: string) => {
      const c = new pkg.novactl.v1[service](address, credentials, {
        "grpc.ssl_target_name_override": "localhost",
      });
      clients.push(c);
      return c;
    };
    const vms = client("VmService", onFollower);
    const admin = bearer(cluster.adminToken);

    // No token: Unauthenticated, with REST's words.
    const noToken = await failure(unary(vms, "ListVms", {}, new grpc.Metadata()));
    assertEquals(noToken.code, grpc.status.UNAUTHENTICATED, noToken.details);
    assert(noToken.details.includes("bearer token"), noToken.details);

    // The event stream, on the follower, from the newest node events on: once one has come,
    // the stream is in place, and the VM's events, later in the log, cannot be missed.
    const events = client("EventService", onFollower);
    const seen: WatchItem[] = [];
    const watch = events.WatchEvents(
      { types: ["vm", "node"], tail: 10 },
      admin,
    ) as grpc.ClientReadableStream<WatchItem>;
    streams.push(watch);
    watch.on("data", (item: WatchItem) => seen.push(item));
    watch.on("error", () => {}); // cancelled at the end
    await until(() => seen.find((i) => i.event?.type === "node"), {
      timeoutMs: 20_000,
      what: "the stream's first node event",
    });
    assert(!seen.some((i) => i.event?.type === "vm"), "no VM yet");

    // A round trip through the follower: its write is forwarded to the leader, as REST's is.
    const created = await unary<{ vm: Vm }>(vms, "CreateVm", {
      name: "grpc1",
      image: "tiny",
      cpus: 1,
      memoryMib: 64,
      start: false,
      labels: { app: "grpc" },
    }, admin);
    assertEquals(created.vm.name, "grpc1");
    assertEquals(created.vm.desired, "stopped");
    assert(created.vm.node, "placed on a host");
    const got = await unary<Vm>(client("VmService", onLeader), "GetVm", { name: "grpc1" }, admin);
    assertEquals(got.name, "grpc1");
    assertEquals(plainStruct(got.record).labels, { app: "grpc" });

    const streamed = await until(
      () => seen.find((i) => i.event?.resource === "grpc1"),
      { timeoutMs: 20_000, what: "the VM's event on the gRPC stream" },
    );
    assertEquals(streamed.event!.type, "vm");

    // Filters and pages: labels and node filter, one per page.
    await unary(vms, "CreateVm", { name: "grpc2", image: "tiny", start: false }, admin);
    const page1 = await unary<{ vms: Vm[]; nextPageToken: string }>(
      vms,
      "ListVms",
      { pageSize: 1 },
      admin,
    );
    assertEquals(page1.vms.map((v) => v.name), ["grpc1"]);
    assert(page1.nextPageToken, "a next page");
    const page2 = await unary<{ vms: Vm[]; nextPageToken: string }>(
      vms,
      "ListVms",
      { pageSize: 1, pageToken: page1.nextPageToken },
      admin,
    );
    assertEquals(page2.vms.map((v) => v.name), ["grpc2"]);
    const labelled = await unary<{ vms: Vm[] }>(vms, "ListVms", { labels: ["app=grpc"] }, admin);
    assertEquals(labelled.vms.map((v) => v.name), ["grpc1"]);
    const onHost = await unary<{ vms: Vm[] }>(vms, "ListVms", { node: created.vm.node }, admin);
    assert(onHost.vms.some((v) => v.name === "grpc1"));
    const badState = await failure(unary(vms, "ListVms", { state: "dancing" }, admin));
    assertEquals(badState.code, grpc.status.INVALID_ARGUMENT, badState.details);

    // Everything REST's create takes: a NIC on a network with a fixed address, cloud-init,
    // placement constraints, HA priority and restart policy; REST shows them.
    const net = await requestJson(`${await cluster.leaderUrl()}/api/v1/networks`, {
      body: { name: "blue", type: "overlay", subnet: "10.30.0.0/24" },
      token: cluster.adminToken,
    });
    assertEquals(net.status, 201, JSON.stringify(net.body));
    const plan = await unary<{ placement: Record<string, never> }>(vms, "CreateVm", {
      name: "grpc3",
      image: "tiny",
      dryRun: true,
    }, admin);
    assert(plainStruct(plan.placement).node, "a dry run names the node it would pick");
    const full = await unary<{ vm: Vm }>(vms, "CreateVm", {
      name: "grpc3",
      image: "tiny",
      memoryMib: 64,
      start: false,
      restartPolicy: "always",
      haPriority: 5,
      constraints: [{ key: "novactl.io/hostname", op: "!=", value: "nowhere" }],
      nics: [{ network: "blue", ip: "10.30.0.40" }],
      cloudInit: { user: "ops", sshKeys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 ops@grpc"] },
    }, admin);
    assertEquals(full.vm.name, "grpc3");
    const shown = await requestJson<{
      nics: { network: string; ip: string }[];
      cloudInit: { user: string; sshKeys: string[] };
      restartPolicy: string;
      haPriority: number;
      constraints: unknown[];
    }>(`${await cluster.leaderUrl()}/api/v1/vms/grpc3`, { token: cluster.adminToken });
    assertEquals(shown.body!.nics.map((n) => [n.network, n.ip]), [["blue", "10.30.0.40"]]);
    assertEquals(shown.body!.cloudInit.user, "ops");
    assertEquals(shown.body!.cloudInit.sshKeys, ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 ops@grpc"]);
    assertEquals([shown.body!.restartPolicy, shown.body!.haPriority], ["always", 5]);
    assertEquals(shown.body!.constraints.length, 1);
    // A bad NIC: InvalidArgument naming the REST field.
    const badNic = await failure(unary(vms, "CreateVm", {
      name: "grpc4",
      image: "tiny",
      start: false,
      nics: [{ network: "blue", mac: "not-a-mac-address" }],
    }, admin));
    assertEquals(badNic.code, grpc.status.INVALID_ARGUMENT, badNic.details);
    assert(/^nics(\.0|\[0\])\.mac: /.test(badNic.details), badNic.details);
    const deletedFull = await requestJson(`${await cluster.leaderUrl()}/api/v1/vms/grpc3`, {
      method: "DELETE",
      token: cluster.adminToken,
    });
    assert(deletedFull.status < 300, JSON.stringify(deletedFull.body));

    // The port's connection guard: a connection that never sends a request is cut at the
    // header timeout (NOVACTL_HEADERS_TIMEOUT_MS, as on the main port).
    const mute = await Deno.connect({
      hostname: "127.0.0.1",
      port: Number(onFollower.split(":").pop()),
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      mute.read(new Uint8Array(64)).then(() => "closed", () => "closed"),
      new Promise((r) => timer = setTimeout(() => r("still open after 30 s"), 30_000)),
    ]);
    clearTimeout(timer);
    assertEquals(outcome, "closed");
    try {
      mute.close();
    } catch { /* closed */ }

    // Start, stop, delete: the VM's desired state follows; a deleted VM is NotFound.
    const started = await unary<{ vm: Vm }>(vms, "StartVm", { name: "grpc1" }, admin);
    assertEquals(started.vm.desired, "running");
    await until(async () => {
      const vm = await unary<Vm>(vms, "GetVm", { name: "grpc1" }, admin);
      return vm.state === "running" || undefined;
    }, { timeoutMs: 30_000, what: "grpc1 running (simulated host)" });
    const stopped = await unary<{ vm: Vm }>(vms, "StopVm", { name: "grpc1" }, admin);
    assertEquals(stopped.vm.desired, "stopped");

    // A viewer may read, not write.
    const issued = await requestJson<{ token: string }>(
      `${await cluster.leaderUrl()}/api/v1/tokens`,
      { body: { name: "grpc-viewer", role: "viewer" }, token: cluster.adminToken },
    );
    assertEquals(issued.status, 201);
    const viewer = bearer(issued.body!.token);
    // Made on the leader: the follower knows the token once it has applied its creation.
    await until(() => unary<Vm>(vms, "GetVm", { name: "grpc1" }, viewer), {
      timeoutMs: 20_000,
      what: "the viewer token known on the follower",
    });
    const denied = await failure(unary(vms, "DeleteVm", { name: "grpc1" }, viewer));
    assertEquals(denied.code, grpc.status.PERMISSION_DENIED, denied.details);
    assert(denied.details.includes("operator required"), denied.details);

    // Bad input: InvalidArgument naming the field, in the message and the metadata.
    const invalid = await failure(
      unary(vms, "CreateVm", { name: "Bad_Name", image: "tiny", start: false }, admin),
    );
    assertEquals(invalid.code, grpc.status.INVALID_ARGUMENT, invalid.details);
    assert(invalid.details.startsWith("name: "), invalid.details);
    const fields = JSON.parse(String(invalid.metadata.get("novactl-error-fields")[0]));
    assertEquals(fields.map((f: { field: string }) => f.field), ["name"]);
    const taken = await failure(
      unary(vms, "CreateVm", { name: "grpc2", image: "tiny", start: false }, admin),
    );
    assertEquals(taken.code, grpc.status.ALREADY_EXISTS, taken.details);

    const deleted = await unary<{ vm: Vm }>(vms, "DeleteVm", { name: "grpc1" }, admin);
    assertEquals(deleted.vm.desired, "deleted");
    await until(async () => {
      const err = await failure(unary(vms, "GetVm", { name: "grpc1" }, admin));
      assertEquals(err.code, grpc.status.NOT_FOUND, err.details);
      return true;
    }, { timeoutMs: 30_000, what: "grpc1 gone" });

    // Nodes, images, operations.
    const nodes = await unary<{ nodes: { name: string; state: string }[] }>(
      client("NodeService", onFollower),
      "ListNodes",
      {},
      viewer,
    );
    assertEquals(nodes.nodes.map((n) => n.name).sort(), cluster.nodes.map((n) => n.name).sort());
    const images = await unary<{ images: { name: string; kind: string }[] }>(
      client("ImageService", onFollower),
      "ListImages",
      {},
      viewer,
    );
    assertEquals(images.images.map((i) => [i.name, i.kind]), [["tiny", "kernel"]]);
    const ops = client("OperationService", onFollower);
    await unary(ops, "ListOperations", {}, viewer);
    const noOp = await failure(unary(ops, "GetOperation", { id: "op-nope" }, viewer));
    assertEquals(noOp.code, grpc.status.NOT_FOUND, noOp.details);

    // Resumed after the first event: the stream goes on with later ones only.
    const first = seen.find((i) => i.event?.type === "vm")!.event!;
    const resumed: WatchItem[] = [];
    const again = events.WatchEvents({ types: ["vm"], since: first.id }, admin);
    streams.push(again);
    again.on("data", (item: WatchItem) => resumed.push(item));
    again.on("error", () => {});
    await until(
      () => resumed.some((i) => i.event?.resource === "grpc2") || undefined,
      { timeoutMs: 20_000, what: "resumed stream's later events" },
    );
    assert(!resumed.some((i) => i.event?.id === first.id), "the resume id itself is not repeated");

    // The same audit as REST: the follower's forwarded create is recorded once, by its principal.
    const audit = await until(async () => {
      const r = await requestJson<
        { entries: { principal: string; code: number; detail: string | null }[] }
      >(
        `${await cluster.leaderUrl()}/api/v1/audit?resource=vm/grpc1`,
        { token: cluster.adminToken },
      );
      return r.body!.entries.some((e) => e.code === 403) ? r.body!.entries : undefined;
    }, { timeoutMs: 20_000, what: "audit records of the gRPC calls" });
    const create = audit.find((e) => e.code === 201);
    assertEquals(
      [create?.principal, create?.detail],
      ["admin", "grpc novactl.v1.VmService/CreateVm"],
      JSON.stringify(audit),
    );
    // A REST client cannot pass itself off as gRPC through a follower's forward.
    const forged = await cluster.fetch(`${follower.url}/api/v1/vms`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${cluster.adminToken}`,
        "x-novactl-via": "grpc forged",
      },
      body: JSON.stringify({ name: "rest1", image: "tiny", start: false }),
    });
    assertEquals(forged.status, 201, await forged.text());
    const restAudit = await until(async () => {
      const r = await requestJson<{ entries: { code: number; detail: string | null }[] }>(
        `${await cluster.leaderUrl()}/api/v1/audit?resource=vm/rest1`,
        { token: cluster.adminToken },
      );
      return r.body!.entries.find((e) => e.code === 201);
    }, { timeoutMs: 20_000, what: "the REST create's audit record" });
    assertEquals(restAudit.detail, null);

    // The Connect protocol: a plain JSON POST (HTTP/1.1 or h2, whichever fetch picks).
    const [host, port] = [
      onFollower.slice(0, onFollower.lastIndexOf(":")),
      onFollower.split(":").pop(),
    ];
    assertEquals(host, "127.0.0.1");
    const connectUrl = `https://localhost:${port}/novactl.v1.VmService/ListVms`;
    const res = await cluster.fetch(connectUrl, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${cluster.adminToken}`,
      },
      body: JSON.stringify({ labels: [] }),
    });
    assertEquals(res.status, 200);
    const listed = await res.json() as { vms: { name: string; memoryMib: number }[] };
    assertEquals(listed.vms.map((v) => v.name), ["grpc2", "rest1"]);
    const refused = await cluster.fetch(connectUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assertEquals(refused.status, 401);
    assertEquals((await refused.json() as { code: string }).code, "unauthenticated");

    // gRPC-Web, with the browser's transport (fetch; here the cluster CA trusted), and the
    // generated TypeScript client.
    const web = createClient(
      VmService,
      createGrpcWebTransport({
        baseUrl: `https://localhost:${port}`,
        fetch: (input, init) => cluster.fetch(input instanceof Request ? input.url : input, init),
      }),
    );
    const viaWeb = await web.listVms({}, {
      headers: { authorization: `Bearer ${cluster.adminToken}` },
    });
    assertEquals(viaWeb.vms.map((v) => v.name), ["grpc2", "rest1"]);
    const webDenied = await web.deleteVm({ name: "grpc2" }, {
      headers: { authorization: `Bearer ${issued.body!.token}` },
    }).then(() => null, (e) => ConnectError.from(e));
    assertEquals(webDenied?.code, Code.PermissionDenied);
  } finally {
    for (const s of streams) s.cancel();
    for (const c of clients) c.close();
    await cluster.stop();
  }
});
