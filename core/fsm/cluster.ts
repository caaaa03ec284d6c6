/** The cluster itself: its bootstrap (id, first member, admin token, first configuration). */
import { validateFullConfig } from "../config/mod.ts";
import type { Command } from "./commands.ts";
import * as config from "./config.ts";
import * as members from "./members.ts";
import * as certs from "./member_certs.ts";
import * as tokens from "./tokens.ts";
import { type Applied, applied, type Resource, type Store } from "./store.ts";

export function clusterId(s: Store): string | null {
  return s.metaGet("cluster_id");
}

/** The bootstrap state of a new cluster, written into its first snapshot. */
function init(s: Store, c: Extract<Command, { op: "cluster.init" }>): Applied {
  s.metaSet("cluster_id", c.clusterId);
  members.put(s, c.member.name, c.member.url, "voter", c.at);
  certs.recordMemberCert(certs.sqlOf(s), c.member.name, c.member, c.at);
  if (c.ca) certs.setClusterCa(certs.sqlOf(s), c.ca);
  tokens.bootstrap(s, c.adminTokenHash, c.at);
  config.write(s, validateFullConfig(c.config), undefined, "system", c.at, "init");
  return applied(
    null,
    { resource: "cluster" },
    { resource: "member", name: c.member.name },
    { resource: "apiToken", name: "admin" },
    { resource: "config" },
  );
}

/** Leaders propose a no-op to commit entries of earlier terms. */
function noop(): Applied {
  return applied(null);
}

/** Cluster bootstrap and no-ops (no tables of its own: the id lives in meta). */
export const resource: Resource<"cluster.init" | "noop"> = {
  tables: [],
  appliers: { "cluster.init": init, noop },
};
