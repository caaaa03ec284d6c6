/** Per-request variables shared by the middlewares and routes. */
import type { ClusterNode } from "../core/cluster/mod.ts";
import type { Role } from "../core/fsm/mod.ts";
import type { Context } from "hono";

export interface Principal {
  name: string;
  role: Role;
}

export type Env = {
  Variables: {
    principal: Principal;
    node: ClusterNode;
    /**
     * The member a peer request comes from: set only when its signature (by the key of
     * its certificate; or, on a plain loopback listener, its per-node credential) is that of a current
     * member (api/auth.ts peerIdentity). Internal routes require it.
     */
    peer: string | undefined;
    /** The client's socket address (api/server.ts). */
    remoteAddr: string;
    /**
     * The bearer token itself, kept only by routes that pass it on to the VM's host
     * (WebSocket consoles); never logged.
     */
    token: string | undefined;
    /** The client's address once worked out (api/remote.ts): a WebSocket's headers go away. */
    clientAddress: string | undefined;
    /** This request's id, answered as `x-request-id` (api/audit.ts). */
    requestId: string;
  };
};

/** Who proposes a change and when: the fields every replicated command carries. */
export function authorship(c: Context<Env>): { by: string; at: number } {
  return { by: c.get("principal").name, at: Date.now() };
}
