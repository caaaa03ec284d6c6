/**
 * The resources of the replicated state, and the table of appliers built
 * from them. Registering a new resource is one line in {@link RESOURCES}:
 * its tables join snapshots (in this order) and its appliers join
 * {@link APPLIERS}, which must cover every `Command["op"]` or this file does
 * not compile.
 */
import type { Appliers, Resource, Table } from "./store.ts";
import * as cluster from "./cluster.ts";
import * as clusterLevel from "./cluster_level.ts";
import * as nodeMeta from "./node_meta.ts";
import * as members from "./members.ts";
import * as memberCerts from "./member_certs.ts";
import * as nodes from "./nodes.ts";
import * as joinTokens from "./join_tokens.ts";
import * as tokens from "./tokens.ts";
import * as config from "./config.ts";
import * as images from "./images.ts";
import * as vms from "./vms.ts";
import * as vmNics from "./vm_nics.ts";
import * as pools from "./pools.ts";
import * as volumes from "./volumes.ts";
import * as vmDisks from "./vm_disks.ts";
import * as vmDevices from "./vm_devices.ts";
import * as groups from "./groups.ts";
import * as networks from "./networks.ts";
import * as securityGroups from "./security_groups.ts";
import * as routers from "./routers.ts";
import * as bridgeMappings from "./bridge_mappings.ts";
import * as operations from "./operations.ts";
import * as vmOperations from "./vm_operations.ts";
import * as audit from "./audit.ts";
import * as plans from "./plans.ts";
import * as backups from "./backups.ts";
import * as alerts from "./alerts.ts";
import * as events from "../events/log.ts";

/** Every resource module, in snapshot and restore order. */
export const RESOURCES = [
  cluster.resource,
  members.resource,
  memberCerts.resource,
  nodes.resource,
  joinTokens.resource,
  tokens.resource,
  config.resource,
  images.resource,
  networks.resource,
  securityGroups.resource,
  routers.resource,
  bridgeMappings.resource,
  pools.resource,
  volumes.resource,
  vms.resource,
  vmNics.resource,
  vmDisks.resource,
  groups.resource,
  operations.resource,
  vmOperations.resource,
  audit.resource,
  plans.resource,
  backups.resource,
  alerts.resource,
  events.resource,
  clusterLevel.resource,
  nodeMeta.resource,
  vmDevices.resource,
] as const;

type UnionToIntersection<U> = (U extends unknown ? (x: U) => void : never) extends
  (x: infer I) => void ? I : never;

/** The appliers the registered resources declare, all together. */
type Registered = UnionToIntersection<(typeof RESOURCES)[number]["appliers"]>;

/** One applier per command kind; a kind no registered resource applies is a compile error here. */
export const APPLIERS: Appliers = mergeAppliers(RESOURCES) as Registered;

/** Replicated tables, in snapshot and restore order. */
export const TABLES: readonly Table[] = RESOURCES.flatMap((r) => r.tables);

/** Replicated table names (a snapshot naming any other table is refused). */
export const TABLE_NAMES: ReadonlySet<string> = new Set(TABLES.map((t) => t.name));

/** The DDL of every table (the meta table holds the applied index and the cluster id). */
export const SCHEMA = [
  "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
  ...TABLES.map((t) => t.ddl),
].join("\n");

function mergeAppliers(list: readonly Resource<never>[]): Record<string, unknown> {
  const all: Record<string, unknown> = {};
  for (const r of list) {
    for (const [op, fn] of Object.entries(r.appliers)) {
      if (op in all) throw new Error(`two resources apply "${op}"`);
      all[op] = fn;
    }
  }
  return all;
}
