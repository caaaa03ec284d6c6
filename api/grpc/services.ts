/**
 * The gRPC services (novactl/v1/novactl.proto), each RPC the REST request of the same name
 * run in-process through the node's own Hono app (see mod.ts for why): this file only
 * translates messages to requests and JSON answers to messages.
 */
import { create, type JsonObject } from "@bufbuild/protobuf";
import { type ConnectRouter, createContextKey, type HandlerContext } from "@connectrpc/connect";
import {
  EventService,
  type Image,
  ImageSchema,
  ImageService,
  type Node,
  NodeSchema,
  NodeService,
  type Operation,
  OperationSchema,
  OperationService,
  type Vm,
  type VmActionResponse,
  VmActionResponseSchema,
  VmSchema,
  VmService,
  type WatchEventsResponse,
  WatchEventsResponseSchema,
} from "./gen/novactl/v1/novactl_pb.ts";
import { readSse } from "../../core/events/sse.ts";
import type { FetchHandler } from "../server.ts";
import { connectErrorOf } from "./errors.ts";

/** The client's socket address, set by the listener (server.ts) for logs and audit. */
export const CLIENT_ADDRESS = createContextKey<string>("unknown", {
  description: "the gRPC client's address",
});

/** Request metadata passed on to the REST request; nothing else (no peer headers). */
const PASSED_HEADERS = ["authorization", "if-match"];

type Json = Record<string, unknown>;

/** Runs REST requests for RPCs through `app` (the node's Hono app). */
class Rest {
  constructor(readonly app: FetchHandler) {}

  /** The REST answer's JSON; a non-2xx answer throws its ConnectError. */
  async call(
    ctx: HandlerContext,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<{ status: number; json: Json }> {
    const res = await this.fetch(ctx, method, path, body);
    const json = await res.json().catch(() => ({})) as Json;
    if (!res.ok) throw connectErrorOf(res.status, json);
    return { status: res.status, json };
  }

  async fetch(ctx: HandlerContext, method: string, path: string, body?: unknown) {
    const headers = new Headers();
    for (const h of PASSED_HEADERS) {
      const v = ctx.requestHeader.get(h);
      if (v !== null) headers.set(h, v);
    }
    if (body !== undefined) headers.set("content-type", "application/json");
    // The host part is never used: the app routes by path.
    const req = new Request(`http://grpc.novactl${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: ctx.signal,
    });
    const res = await this.app(req, {
      remoteAddr: ctx.values.get(CLIENT_ADDRESS),
      tlsPeer: null,
      insecure: false,
      via: `grpc ${ctx.service.typeName}/${ctx.method.name}`,
    });
    const id = res.headers.get("x-request-id");
    if (id) ctx.responseHeader.set("x-request-id", id);
    return res;
  }
}

const enc = encodeURIComponent;

function query(params: Record<string, string | string[] | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) if (one) q.append(k, one);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

const str = (v: unknown) => typeof v === "string" ? v : "";
const num = (v: unknown) => typeof v === "number" ? v : 0;
const labels = (v: unknown) =>
  v && typeof v === "object" ? v as Record<string, string> : {} as Record<string, string>;
const obj = (v: unknown) =>
  v && typeof v === "object" && !Array.isArray(v) ? v as JsonObject : undefined;

export function vmOf(r: Json): Vm {
  return create(VmSchema, {
    name: str(r.name),
    uuid: str(r.uuid),
    image: str(r.image),
    cpus: num(r.cpus),
    memoryMib: num(r.memoryMiB),
    node: str(r.node),
    ha: r.ha === true,
    labels: labels(r.labels),
    desired: str(r.desired),
    state: str(r.state),
    reason: str(r.reason),
    restartPolicy: str(r.restartPolicy),
    template: r.template === true,
    createdAt: str(r.createdAt),
    updatedAt: str(r.updatedAt),
    record: r as JsonObject,
  });
}

function nodeOf(r: Json): Node {
  return create(NodeSchema, {
    name: str(r.name),
    url: str(r.url),
    state: str(r.state),
    role: str(r.role),
    labels: labels(r.labels),
    joinedAt: str(r.joinedAt),
    updatedAt: str(r.updatedAt),
    record: r as JsonObject,
  });
}

function imageOf(r: Json): Image {
  return create(ImageSchema, {
    name: str(r.name),
    kind: str(r.kind),
    createdAt: str(r.createdAt),
    createdBy: str(r.createdBy),
    sources: Array.isArray(r.sources) ? r.sources.map(String) : [],
    record: r as JsonObject,
  });
}

function operationOf(r: Json): Operation {
  return create(OperationSchema, {
    id: str(r.id),
    kind: str(r.kind),
    target: str(r.target),
    runner: str(r.runner),
    state: str(r.state),
    by: str(r.by),
    error: str(r.error),
    progress: obj(r.progress),
    result: obj(r.result),
    createdAt: str(r.createdAt),
    updatedAt: str(r.updatedAt),
    requestId: str(r.requestId),
    record: r as JsonObject,
  });
}

/**
 * A VM action's REST answer: the VM (200/201), or an operation (202), or both
 * (`{vm, operation}`).
 */
function actionOf(json: Json): VmActionResponse {
  const vm = obj(json.vm) ?? ("uuid" in json ? json : undefined);
  const op = obj(json.operation) ?? ("runner" in json ? json : undefined);
  return create(VmActionResponseSchema, {
    vm: vm ? vmOf(vm as Json) : undefined,
    operation: op ? operationOf(op as Json) : undefined,
  });
}

/** Only the fields a client set: REST's defaults decide the rest. */
function setFields(o: Record<string, unknown>): Json {
  return Object.fromEntries(
    Object.entries(o).filter(([, v]) =>
      v !== undefined && v !== "" && !(typeof v === "object" && v !== null &&
        Object.keys(v).length === 0)
    ),
  );
}

/** A list request's page, as REST's `limit` and `continue` (api/pagination.ts). */
function pageParams(req: { pageSize: number; pageToken: string }) {
  return {
    limit: req.pageSize ? String(req.pageSize) : undefined,
    continue: req.pageToken || undefined,
  };
}

/** {@link pageParams} as a query string. */
function pageOf(req: { pageSize: number; pageToken: string }): string {
  return query(pageParams(req));
}

/** Registers every service on `router`, serving through `app` (the node's REST app). */
export function novactlServices(app: FetchHandler): (router: ConnectRouter) => void {
  const rest = new Rest(app);
  return (router) => {
    router.service(NodeService, {
      async listNodes(req, ctx) {
        const { json } = await rest.call(ctx, "GET", "/api/v1/nodes" + pageOf(req));
        return { nodes: (json.nodes as Json[]).map(nodeOf), nextPageToken: str(json.continue) };
      },
      async getNode(req, ctx) {
        return nodeOf((await rest.call(ctx, "GET", `/api/v1/nodes/${enc(req.name)}`)).json);
      },
    });

    router.service(VmService, {
      async listVms(req, ctx) {
        const { json } = await rest.call(
          ctx,
          "GET",
          "/api/v1/vms" + query({
            node: req.node,
            state: req.state,
            label: req.labels,
            ...pageParams(req),
          }),
        );
        return { vms: (json.vms as Json[]).map(vmOf), nextPageToken: str(json.continue) };
      },
      async getVm(req, ctx) {
        return vmOf((await rest.call(ctx, "GET", `/api/v1/vms/${enc(req.name)}`)).json);
      },
      async createVm(req, ctx) {
        const body = setFields({
          name: req.name,
          image: req.image,
          fromTemplate: req.fromTemplate,
          cpus: req.cpus,
          memoryMiB: req.memoryMib,
          diskGiB: req.diskGib,
          node: req.node,
          ha: req.ha || undefined,
          start: req.start,
          labels: req.labels,
          restartPolicy: req.restartPolicy,
          group: req.group,
          strategy: req.strategy,
          pool: req.pool,
          constraints: req.constraints.length
            ? req.constraints.map((c) => ({ key: c.key, op: c.op, value: c.value }))
            : undefined,
          haPriority: req.haPriority,
          haMaxRestarts: req.haMaxRestarts,
          haRestartWindowMs: req.haRestartWindowMs,
          dryRun: req.dryRun || undefined,
          nics: req.nics.length
            ? req.nics.map((n) =>
              setFields({
                network: n.network,
                ip: n.ip,
                mac: n.mac,
                securityGroups: n.securityGroups.length ? n.securityGroups : undefined,
              })
            )
            : undefined,
          cloudInit: req.cloudInit
            ? setFields({
              user: req.cloudInit.user,
              sshKeys: req.cloudInit.sshKeys.length ? req.cloudInit.sshKeys : undefined,
              passwordHash: req.cloudInit.passwordHash,
              userData: req.cloudInit.userData,
            })
            : undefined,
        });
        // The REST body always names the VM (and each NIC its network), so a missing one is
        // reported as REST does.
        body.name ??= "";
        for (const nic of (body.nics ?? []) as Json[]) nic.network ??= "";
        const q = query({ wait: req.waitSeconds ? String(req.waitSeconds) : undefined });
        const { json } = await rest.call(ctx, "POST", `/api/v1/vms${q}`, body);
        if (req.dryRun) {
          return create(VmActionResponseSchema, { placement: json as JsonObject });
        }
        return actionOf(json);
      },
      async startVm(req, ctx) {
        return actionOf((await rest.call(ctx, "POST", `/api/v1/vms/${enc(req.name)}/start`)).json);
      },
      async stopVm(req, ctx) {
        const q = query({ force: req.force ? "true" : undefined });
        return actionOf(
          (await rest.call(ctx, "POST", `/api/v1/vms/${enc(req.name)}/stop${q}`)).json,
        );
      },
      async restartVm(req, ctx) {
        return actionOf(
          (await rest.call(ctx, "POST", `/api/v1/vms/${enc(req.name)}/restart`)).json,
        );
      },
      async deleteVm(req, ctx) {
        const q = query({
          force: req.force ? "true" : undefined,
          keepDisks: req.keepDisks ? "true" : undefined,
        });
        return actionOf((await rest.call(ctx, "DELETE", `/api/v1/vms/${enc(req.name)}${q}`)).json);
      },
    });

    router.service(ImageService, {
      async listImages(req, ctx) {
        const { json } = await rest.call(ctx, "GET", "/api/v1/images" + pageOf(req));
        return { images: (json.images as Json[]).map(imageOf), nextPageToken: str(json.continue) };
      },
    });

    router.service(OperationService, {
      async listOperations(req, ctx) {
        const { json } = await rest.call(ctx, "GET", "/api/v1/operations" + pageOf(req));
        return {
          operations: (json.operations as Json[]).map(operationOf),
          nextPageToken: str(json.continue),
        };
      },
      async getOperation(req, ctx) {
        return operationOf((await rest.call(ctx, "GET", `/api/v1/operations/${enc(req.id)}`)).json);
      },
      async waitOperation(req, ctx) {
        const q = query({ timeoutMs: req.timeoutMs ? String(req.timeoutMs) : undefined });
        return operationOf(
          (await rest.call(ctx, "GET", `/api/v1/operations/${enc(req.id)}/wait${q}`)).json,
        );
      },
    });

    router.service(EventService, {
      async *watchEvents(req, ctx): AsyncGenerator<WatchEventsResponse> {
        const path = "/api/v1/events" + query({
          type: req.types.length ? req.types.join(",") : undefined,
          resource: req.resource,
          since: req.since,
          tail: req.tail ? String(req.tail) : undefined,
          follow: "true",
        });
        const res = await rest.fetch(ctx, "GET", path);
        if (!res.ok || !res.body) {
          throw connectErrorOf(res.status, await res.json().catch(() => ({})));
        }
        // The client's cancel (ctx.signal) cancels the REST stream, which ends the loop below.
        const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
        res.body.pipeTo(writable, { signal: ctx.signal }).catch(() => {});
        for await (const m of readSse(readable)) {
          if (m.comment !== undefined) continue; // keepalives: HTTP/2 has its own pings
          const data = JSON.parse(m.data) as Json;
          if (m.event === "gap") {
            yield create(WatchEventsResponseSchema, {
              item: {
                case: "gap",
                value: {
                  after: str(data.after),
                  oldest: str(data.oldest),
                  message: str(data.message),
                },
              },
            });
            continue;
          }
          yield create(WatchEventsResponseSchema, {
            item: {
              case: "event",
              value: {
                id: str(data.id),
                type: str(data.type),
                action: str(data.action),
                kind: str(data.kind),
                resource: str(data.resource),
                target: str(data.target),
                at: str(data.at),
                details: obj(data.details),
              },
            },
          });
        }
      },
    });
  };
}
