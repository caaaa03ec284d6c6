/** Per-request variables shared by the middlewares and routes. */
import type { ClusterNode } from "../core/cluster/mod.ts";
import type { Role } from "../core/fsm/mod.ts";

export interface Principal {
  name: string;
  role: Role;
}

export type Env = { Variables: { principal: Principal; node: ClusterNode } };
