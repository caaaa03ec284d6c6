/** Per-request variables shared by the middlewares and routes. */
import type { ClusterNode } from "../core/cluster/mod.ts";
import type { Role } from "../core/fsm/mod.ts";

export interface Principal {
  name: string;
  role: Role;
}

export type Env = {
  Variables: {
    principal: Principal;
    node: ClusterNode;
    /** The member that forwarded this request, once authenticated (api/remote.ts). */
    peer: string | undefined;
    /** The client's address as the server layer saw it (api/remote.ts). */
    remoteAddr: string | undefined;
    /** This request's id, answered as `x-request-id` (api/audit.ts). */
    requestId: string;
  };
};
