/**
 * The gRPC layer in-process: the real app over a one-voter cluster, served by GrpcServer
 * over h2c, called by @grpc/grpc-js. Error codes from the error hierarchy, the message as
 * sent, roles, the VM list's filters and pages, and no peer header passed on.
 * (tests/grpc_test.ts drives real node processes over TLS.)
 */
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { VmService } from "./gen/novactl/v1/novactl_pb.ts";
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { startTestApp } from "../testing.ts";
import { metrics } from "../../core/metrics/mod.ts";
import { eventually } from "../../tests/support/api.ts";
import { connectCodeOf, connectErrorOf } from "./errors.ts";
import { GrpcServer } from "./server.ts";
import { specEncode } from "./server.ts";
import { plainStruct } from "./testing.ts";

const PROTO = new URL("./novactl/v1/novactl.proto", import.meta.url).pathname;

Deno.test("gRPC codes: each error code of core/errors maps to its gRPC code", () => {
  assertEquals(connectCodeOf("validation"), Code.InvalidArgument);
  assertEquals(connectCodeOf("unauthorized"), Code.Unauthenticated);
  assertEquals(connectCodeOf("forbidden"), Code.PermissionDenied);
  assertEquals(connectCodeOf("not_found"), Code.NotFound);
  assertEquals(connectCodeOf("conflict", 'network "a" already exists'), Code.AlreadyExists);
  assertEquals(connectCodeOf("conflict", "VM is running"), Code.FailedPrecondition);
  assertEquals(connectCodeOf("precondition_failed"), Code.FailedPrecondition);
  assertEquals(connectCodeOf("no_quorum"), Code.Unavailable);
  assertEquals(connectCodeOf("not_leader"), Code.Unavailable);
  assertEquals(connectCodeOf("unavailable"), Code.Unavailable);
  assertEquals(connectCodeOf("timeout"), Code.DeadlineExceeded);
  assertEquals(connectCodeOf("too_large"), Code.ResourceExhausted);
  assertEquals(connectCodeOf("internal"), Code.Internal);
  assertEquals(connectCodeOf("something new"), Code.Unknown);
  const err = connectErrorOf(400, {
    error: {
      code: "validation",
      message: "cpus: too many",
      details: { fields: [{ field: "cpus" }] },
    },
  });
  assertEquals(err.code, Code.InvalidArgument);
  assertEquals(err.rawMessage, "cpus: too many");
  assertEquals(err.metadata.get("novactl-error-fields"), '[{"field":"cpus"}]');
});

Deno.test("grpc-message: percent-encoded as the gRPC spec says (printable ASCII kept, % encoded)", () => {
  assertEquals(specEncode('name: "x" 100%'), 'name: "x" 100%25');
  assertEquals(specEncode("é\n"), "%C3%A9%0A");
});

// deno-lint-ignore no-explicit-any
type Client = any;
interface GrpcError {
  code: number;
  details: string;
  metadata: grpc.Metadata;
}

function call<T>(client: Client, method: string, req: unknown, md: grpc.Metadata): Promise<T> {
  return new Promise((resolve, reject) =>
    client[method](req, md, (err: GrpcError | null, res: T) => err ? reject(err) : resolve(res))
  );
}

async function failure(p: Promise<unknown>): Promise<GrpcError> {
  try {
    throw new Error(`expected a gRPC error, got ${JSON.stringify(await p)}`);
  } catch (err) {
    if (typeof (err as GrpcError).code !== "number") throw err;
    return err as GrpcError;
  }
}

function metadata(headers: Record<string, string>): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return md;
}

testWithTimeout({
  name: "gRPC in-process: codes, roles, list filters and pages, peer headers dropped",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const { c, app, tokens } = await startTestApp();
  /** The headers of each request the app got. */
  const seenHeaders: Headers[] = [];
  /** The path and query of each request the app got. */
  const seenPaths: string[] = [];
  const server = await GrpcServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: null,
    app: (req, env) => {
      seenHeaders.push(new Headers(req.headers));
      const url = new URL(req.url);
      seenPaths.push(url.pathname + url.search);
      return app.fetch(req, env);
    },
  });
  const pkg = grpc.loadPackageDefinition(
    protoLoader.loadSync(PROTO, { defaults: true, oneofs: true }),
    // deno-lint-ignore no-explicit-any
  ) as any;
  const vms = new pkg.novactl.v1.VmService(
    `127.0.0.1:${server.port}`,
    grpc.credentials.createInsecure(),
  );
  const baseUrl = `http://127.0.0.1:${server.port}`;
  const as = (token: string) => metadata({ authorization: `Bearer ${token}` });
  try {
    await c.addHost("n2");
    for (let i = 0; i < 5; i++) {
      await c.vm({
        name: `vm${i}`,
        node: i % 2 ? "n2" : "n1",
        labels: { tier: i % 2 ? "web" : "db" },
      }, i < 3 ? "running" : "stopped");
    }

    await t.step("no token, a bad token: Unauthenticated", async () => {
      const none = await failure(call(vms, "ListVms", {}, new grpc.Metadata()));
      assertEquals(none.code, grpc.status.UNAUTHENTICATED);
      assertEquals(none.details, "missing bearer token in Authorization header");
      const bad = await failure(call(vms, "ListVms", {}, as("nva_nope")));
      assertEquals(bad.code, grpc.status.UNAUTHENTICATED);
    });

    await t.step("a viewer reads, is refused writes: PermissionDenied", async () => {
      const got = await call<{ name: string; node: string; record: Record<string, never> }>(
        vms,
        "GetVm",
        { name: "vm1" },
        as(tokens.viewer),
      );
      assertEquals([got.name, got.node], ["vm1", "n2"]);
      const record = plainStruct(got.record);
      assertEquals([record.name, record.labels, record.cpus], ["vm1", { tier: "web" }, 1]);
      const denied = await failure(call(vms, "StopVm", { name: "vm1" }, as(tokens.viewer)));
      assertEquals(denied.code, grpc.status.PERMISSION_DENIED);
      assertEquals(denied.details, "role viewer may not do this; operator required");
      // Audited as REST's route, naming the RPC.
      const audited = await eventually("the refused write's audit record", async () => {
        const res = await app.request("/api/v1/audit?resource=vm/vm1", {
          headers: { authorization: `Bearer ${tokens.admin}` },
        });
        const { entries } = await res.json() as {
          entries: { code: number; route: string; detail: string | null; principal: string }[];
        };
        return entries.find((e) => e.code === 403);
      });
      assertEquals(
        [audited.route, audited.detail, audited.principal],
        ["/api/v1/vms/:name/stop", "grpc novactl.v1.VmService/StopVm", "viewer-token"],
      );
    });

    await t.step("unknown VM: NotFound; bad input: InvalidArgument naming the field", async () => {
      const missing = await failure(call(vms, "GetVm", { name: "nope" }, as(tokens.viewer)));
      assertEquals(missing.code, grpc.status.NOT_FOUND);
      assertEquals(missing.details, 'vm "nope" not found');
      const bad = await failure(
        call(vms, "CreateVm", { name: "ok", image: "x", cpus: 999 }, as(tokens.operator)),
      );
      assertEquals(bad.code, grpc.status.INVALID_ARGUMENT);
      assert(bad.details.startsWith("cpus: "), bad.details);
      assertEquals(
        JSON.parse(String(bad.metadata.get("novactl-error-fields")[0])).map((
          f: { field: string },
        ) => f.field),
        ["cpus"],
      );
    });

    await t.step("filters and pages", async () => {
      const names = (r: { vms: { name: string }[] }) => r.vms.map((v) => v.name);
      const v = as(tokens.viewer);
      assertEquals(names(await call(vms, "ListVms", { node: "n2" }, v)), ["vm1", "vm3"]);
      assertEquals(names(await call(vms, "ListVms", { state: "stopped" }, v)), ["vm3", "vm4"]);
      assertEquals(names(await call(vms, "ListVms", { labels: ["tier=db"] }, v)), [
        "vm0",
        "vm2",
        "vm4",
      ]);
      const seen: string[] = [];
      let token = "";
      do {
        const page = await call<{ vms: { name: string }[]; nextPageToken: string }>(
          vms,
          "ListVms",
          { pageSize: 2, pageToken: token },
          v,
        );
        seen.push(...names(page));
        token = page.nextPageToken;
      } while (token);
      assertEquals(seen, ["vm0", "vm1", "vm2", "vm3", "vm4"]);
      const badToken = await failure(call(vms, "ListVms", { pageToken: "junk" }, v));
      assertEquals(badToken.code, grpc.status.INVALID_ARGUMENT);
      assert(badToken.details.startsWith("continue: "), badToken.details);
    });

    await t.step("ListNodes and ListImages page as REST does", async () => {
      const nodes = new pkg.novactl.v1.NodeService(
        `127.0.0.1:${server.port}`,
        grpc.credentials.createInsecure(),
      );
      const v = as(tokens.viewer);
      const first = await call<{ nodes: { name: string }[]; nextPageToken: string }>(
        nodes,
        "ListNodes",
        { pageSize: 1 },
        v,
      );
      assertEquals(first.nodes.map((n) => n.name), ["n1"]);
      const second = await call<{ nodes: { name: string }[]; nextPageToken: string }>(
        nodes,
        "ListNodes",
        { pageSize: 1, pageToken: first.nextPageToken },
        v,
      );
      assertEquals([second.nodes.map((n) => n.name), second.nextPageToken], [["n2"], ""]);
      const images = new pkg.novactl.v1.ImageService(
        `127.0.0.1:${server.port}`,
        grpc.credentials.createInsecure(),
      );
      const all = await call<{ images: unknown[]; nextPageToken: string }>(
        images,
        "ListImages",
        {},
        v,
      );
      assertEquals([all.images.length > 0, all.nextPageToken], [true, ""]);
      const wrong = await failure(
        call(images, "ListImages", { pageToken: first.nextPageToken }, v),
      );
      assertEquals(wrong.code, grpc.status.INVALID_ARGUMENT);
      assert(wrong.details.startsWith("continue: "), wrong.details);
      nodes.close();
      images.close();
    });

    await t.step("other lists pass their page size and token on as REST's", async () => {
      for (
        const [service, method, path] of [
          ["NodeService", "ListNodes", "/api/v1/nodes"],
          ["ImageService", "ListImages", "/api/v1/images"],
          ["OperationService", "ListOperations", "/api/v1/operations"],
        ]
      ) {
        const client = new pkg.novactl.v1[service](
          `127.0.0.1:${server.port}`,
          grpc.credentials.createInsecure(),
        );
        seenPaths.length = 0;
        // Tokens are checked by REST (the step above pages with a real one).
        await call(client, method, { pageSize: 2 }, as(tokens.viewer));
        await call(client, method, {}, as(tokens.viewer));
        assertEquals(seenPaths, [`${path}?limit=2`, path]);
        client.close();
      }
    });

    await t.step("peer headers sent as metadata are not passed on", async () => {
      // A member's headers would make the app trust a forwarded client address or request id.
      const md = as(tokens.viewer);
      md.set("x-novactl-forwarded-by", "n2");
      md.set("x-novactl-forwarded-for", "10.9.9.9");
      md.set("x-novactl-peer-credential", "n1:secret");
      seenHeaders.length = 0;
      await call(vms, "GetVm", { name: "vm1" }, md);
      assertEquals(seenHeaders.map((h) => [...h.keys()].sort()), [["authorization"]]);
    });
    await t.step("WatchEvents: events as they are, and a cancel ends the REST stream", async () => {
      const streams = async () => (await metrics.eventStreams.get()).values[0]?.value ?? 0;
      const before = await streams();
      const events = new pkg.novactl.v1.EventService(
        `127.0.0.1:${server.port}`,
        grpc.credentials.createInsecure(),
      );
      const got: { event?: { type: string; resource: string; id: string } }[] = [];
      const watch = events.WatchEvents({ types: ["vm"], tail: 2 }, as(tokens.viewer));
      watch.on("data", (item: (typeof got)[number]) => got.push(item));
      const ended = new Promise((resolve) => watch.on("error", resolve));
      await eventually("two events", () => Promise.resolve(got.length >= 2 || undefined));
      // The newest two: the last VM made, vm4's.
      assertEquals(got.map((i) => [i.event?.type, i.event?.resource]), [["vm", "vm4"], [
        "vm",
        "vm4",
      ]]);
      await c.vm({ name: "vm5", node: "n1" }, "stopped");
      await eventually(
        "vm5's event",
        () => Promise.resolve(got.some((i) => i.event?.resource === "vm5") || undefined),
      );
      assertEquals(await streams(), before + 1);
      watch.cancel();
      await ended;
      await eventually(
        "the REST stream closed",
        async () => (await streams()) === before || undefined,
      );
      events.close();
    });

    await t.step("RestartVm (level 2): the VM and the operation that follows it", async () => {
      await c.node.propose({ op: "cluster.upgrade", level: 2, at: Date.now() });
      const r = await call<{ vm: { name: string }; operation: { id: string; kind: string } }>(
        vms,
        "RestartVm",
        { name: "vm0" },
        as(tokens.operator),
      );
      assertEquals([r.vm.name, r.operation.kind], ["vm0", "restart"]);
      assertEquals(c.node.fsm.operation(r.operation.id)?.state, "running");
    });

    await t.step(
      "the Connect protocol (connect-node's transport, the generated client)",
      async () => {
        // gRPC-Web is checked over TLS with the browser's transport (tests/grpc_test.ts): Deno's
        // node:http2 client ends gRPC-Web answers above ~1 KB with "Premature close" (curl reads
        // the same answers whole).
        for (const transport of [createConnectTransport({ baseUrl, httpVersion: "2" })]) {
          const client = createClient(VmService, transport);
          const headers = { authorization: `Bearer ${tokens.viewer}` };
          const page = await client.listVms({ node: "n2" }, { headers });
          assertEquals(page.vms.map((v) => [v.name, v.labels.tier]), [["vm1", "web"], [
            "vm3",
            "web",
          ]]);
          const err = await client.getVm({ name: "vm1" }).then(
            () => null,
            (e) => ConnectError.from(e),
          );
          assertEquals(err?.code, Code.Unauthenticated);
          assertEquals(err?.rawMessage, "missing bearer token in Authorization header");
        }
      },
    );
    await t.step(
      "CreateVm takes what REST's create takes: NICs, cloud-init, HA, dry run",
      async () => {
        const admin = {
          authorization: `Bearer ${tokens.admin}`,
          "content-type": "application/json",
        };
        const net = await app.request("/api/v1/networks", {
          method: "POST",
          headers: admin,
          body: JSON.stringify({ name: "blue", type: "overlay", subnet: "10.20.0.0/24" }),
        });
        assertEquals(net.status, 201, await net.text());
        const op = as(tokens.operator);
        const plan = await call<{ vm: unknown; placement: Record<string, never> }>(
          vms,
          "CreateVm",
          {
            name: "planned",
            image: "img",
            dryRun: true,
            constraints: [{ key: "zone", op: "!=", value: "b" }],
          },
          op,
        );
        assertEquals(plan.vm, null);
        const placement = plainStruct(plan.placement);
        assertEquals([placement.dryRun, placement.name], [true, "planned"]);
        const created = await call<{ vm: { name: string; restartPolicy: string } }>(
          vms,
          "CreateVm",
          {
            name: "full",
            node: "n1",
            image: "img",
            start: false,
            haPriority: 7,
            haMaxRestarts: 3,
            haRestartWindowMs: 60_000,
            restartPolicy: "on-failure",
            constraints: [{ key: "zone", op: "!=", value: "b" }],
            nics: [{ network: "blue", ip: "10.20.0.50" }],
            cloudInit: { user: "ops", sshKeys: ["ssh-ed25519 AAAAC3Nza ops@x"] },
          },
          as(tokens.admin),
        );
        assertEquals([created.vm.name, created.vm.restartPolicy], ["full", "on-failure"]);
        const shown = await (await app.request("/api/v1/vms/full", { headers: admin })).json();
        assertEquals(shown.nics.map((n: { network: string; ip: string }) => [n.network, n.ip]), [[
          "blue",
          "10.20.0.50",
        ]]);
        assertEquals([shown.cloudInit?.user, shown.cloudInit?.sshKeys], [
          "ops",
          ["ssh-ed25519 AAAAC3Nza ops@x"],
        ]);
        assertEquals(shown.constraints, [{ key: "zone", op: "!=", value: "b" }]);
        assertEquals(
          [shown.haPriority, shown.haMaxRestarts, shown.haRestartWindowMs],
          [7, 3, 60_000],
        );
        const fieldsOf = (e: GrpcError) =>
          JSON.parse(String(e.metadata.get("novactl-error-fields")[0])).map((
            f: { field: string },
          ) => f.field);
        const noNet = await failure(
          call(vms, "CreateVm", { name: "n1c", image: "img", nics: [{ ip: "10.20.0.9" }] }, op),
        );
        assertEquals(noNet.code, grpc.status.INVALID_ARGUMENT);
        assert(noNet.details.startsWith("nics.0.network: "), noNet.details);
        assertEquals(fieldsOf(noNet), ["nics.0.network"]);
        const longUser = await failure(
          call(
            vms,
            "CreateVm",
            { name: "ci", image: "img", cloudInit: { user: "u".repeat(40) } },
            op,
          ),
        );
        assertEquals(longUser.code, grpc.status.INVALID_ARGUMENT);
        assertEquals(fieldsOf(longUser), ["cloudInit.user"]);
        const badOp = await failure(call(vms, "CreateVm", {
          name: "co",
          image: "img",
          constraints: [{ key: "zone", op: "~", value: "b" }],
        }, op));
        assertEquals(fieldsOf(badOp), ["constraints.0.op"]);
        const badPriority = await failure(
          call(vms, "CreateVm", { name: "hp", image: "img", haPriority: 5000 }, op),
        );
        assertEquals(fieldsOf(badPriority), ["haPriority"]);
      },
    );
  } finally {
    vms.close();
    await server.close();
    await c.stop();
  }
});
