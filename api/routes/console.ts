/**
 * Interactive consoles of a running VM over WebSockets, served by its host and relayed there
 * by any other node:
 *
 * - `GET /api/v1/vms/NAME/console/ws`: the serial console. Binary frames both ways (text
 *   frames from the client are taken as UTF-8 input); the log's tail comes first.
 * - `GET /api/v1/vms/NAME/vnc/ws`: the graphical console, RFB relayed to QEMU's VNC server.
 *   noVNC's `binary` subprotocol is accepted.
 *
 * Both need the operator role, as the console's log does (`GET /api/v1/vms/NAME/console`):
 * what a guest prints or draws (passwords, keys) is for those who may drive the VM, not for
 * viewers (Proxmox's auditors lack its console privilege too).
 *
 * The token comes as `Authorization: Bearer` or, from browsers, `?token=`. Everything that
 * can be refused (401, 403, 404, 409) is answered before the upgrade.
 *
 * A node that is not the VM's host opens a WebSocket to the host with its peer identity (as
 * api/forward.ts does for requests), passing the client's token in a header, and pipes the
 * two; the host authenticates the token again and decides who may type.
 *
 * @module
 */
import { type Context, Hono } from "hono";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { ConflictError, NotFoundError, UnavailableError } from "../../core/errors/mod.ts";
import type { VmRecord } from "../../core/fsm/mod.ts";
import type { VmHost } from "../../host/mod.ts";
import { z } from "zod";
import { bearerAuth, requireRole } from "../auth.ts";
import { doc } from "../openapi/mod.ts";
import type { Env } from "../context.ts";
import { FORWARDED_HEADER } from "../forward.ts";
import { forwardingHeaders, remoteAddress } from "../remote.ts";
import {
  closeSocket,
  frameBytes,
  offeredProtocols,
  opened,
  pipeConn,
  pipeSockets,
  requireWebSocket,
  sendIfOpen,
  upgrade,
} from "../websocket.ts";

/** How long a relaying node waits for the host's WebSocket to open. */
const HOST_OPEN_TIMEOUT_MS = 10_000;

/** Browsers cannot set headers on a WebSocket: the token may come in the query instead. */
const wsQuery = z.object({
  token: z.string().optional().describe("the API token, when no Authorization header is sent"),
});
const serialDoc = doc({
  summary: "The serial console, interactive (WebSocket; operator role)",
  query: wsQuery,
  responseType: "application/octet-stream",
  status: 101,
});
const vncDoc = doc({
  summary: "The graphical console: RFB over a WebSocket (noVNC's `binary` subprotocol)",
  query: wsQuery,
  responseType: "application/octet-stream",
  status: 101,
});

export function consoleRoutes(node: ClusterNode, host: VmHost): Hono<Env> {
  const app = new Hono<Env>();
  const auth = bearerAuth(node, { queryToken: true });

  app.get("/:name/console/ws", serialDoc, auth, requireRole("operator"), async (c) => {
    const vm = runningVm(c, node);
    if (vm.node !== node.id) return await relayToHost(c, node, vm);
    remoteAddress(c);
    let socket: WebSocket | null = null;
    const early: Uint8Array[] = [];
    let ended: string | null = null;
    const attachment = await host.attachSerial(vm.name, {
      data: (bytes) =>
        socket?.readyState === WebSocket.OPEN ? socket.send(bytes) : early.push(bytes),
      end: (reason) => {
        ended = reason;
        if (socket) closeSocket(socket, 1000, reason);
      },
    });
    const up = upgrade(c);
    socket = up.socket;
    socket.onopen = () => {
      for (const b of early.splice(0)) sendIfOpen(up.socket, b);
      if (ended !== null) closeSocket(up.socket, 1000, ended);
    };
    socket.onmessage = (e) => attachment.write(frameBytes(e.data)).catch(() => {});
    socket.onclose = () => attachment.detach();
    socket.onerror = () => attachment.detach();
    return up.response;
  });

  app.get("/:name/vnc/ws", vncDoc, auth, requireRole("operator"), async (c) => {
    const vm = runningVm(c, node);
    if (vm.node !== node.id) return await relayToHost(c, node, vm);
    const protocol = offeredProtocols(c).includes("binary") ? "binary" : undefined;
    remoteAddress(c);
    const conn = await host.connectVnc(vm.name);
    const up = upgrade(c, protocol);
    pipeConn(up.socket, conn);
    return up.response;
  });

  return app;
}

/** The VM named in the path, if it is running and this is a WebSocket handshake. */
function runningVm(c: Context<Env>, node: ClusterNode): VmRecord {
  const name = c.req.param("name") ?? "";
  const vm = node.fsm.vm(name);
  if (!vm) throw new NotFoundError("vm", name);
  requireWebSocket(c);
  if (vm.state !== "running" || !vm.node) {
    throw new ConflictError(`VM "${name}" is not running (state ${vm.state}); start it first`);
  }
  return vm;
}

/** Opens the same WebSocket on the VM's host and pipes the client's to it. */
async function relayToHost(c: Context<Env>, node: ClusterNode, vm: VmRecord): Promise<Response> {
  if (c.req.header(FORWARDED_HEADER)) {
    throw new ConflictError(`VM "${vm.name}" moved while the request was forwarded; retry`);
  }
  const member = node.fsm.member(vm.node!);
  if (!member) throw new ConflictError(`VM "${vm.name}" has no reachable host (${vm.node})`);
  const protocols = offeredProtocols(c);
  const headers: Record<string, string> = {
    ...forwardingHeaders(c),
    [FORWARDED_HEADER]: node.id,
    // The host authenticates the client itself; a header, never the URL, carries the token.
    authorization: `Bearer ${c.get("token")}`,
  };
  const url = member.url + new URL(c.req.url).pathname;
  let upstream: WebSocket;
  try {
    upstream = await node.peerHttp.webSocket(url, { headers, protocols });
  } catch (err) {
    throw new UnavailableError(`host ${vm.node} of VM "${vm.name}": ${(err as Error).message}`);
  }
  if (!(await opened(upstream, HOST_OPEN_TIMEOUT_MS))) {
    throw new UnavailableError(
      `host ${vm.node} of VM "${vm.name}" refused or did not answer the console; retry`,
    );
  }
  const up = upgrade(c, upstream.protocol || undefined);
  pipeSockets(up.socket, upstream);
  return up.response;
}
