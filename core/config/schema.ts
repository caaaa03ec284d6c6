/**
 * The cluster configuration: a flat map of dotted keys, each with a zod schema
 * and a default. Unknown keys are rejected, values are coerced from the
 * strings a shell hands us (`novactl config set nodes.offlineAfterMs 5000`).
 */
import { z } from "zod";
import { type FieldIssue, ValidationError } from "../errors/mod.ts";

/** Accepts a number or a numeric string (CLI values arrive as text). */
function numeric(schema: z.ZodTypeAny) {
  return z.preprocess(
    (v) => (typeof v === "string" && v.trim() !== "" && !isNaN(Number(v)) ? Number(v) : v),
    schema,
  );
}

function boolean() {
  return z.preprocess(
    (v) => (v === "true" ? true : v === "false" ? false : v),
    z.boolean(),
  );
}

/** OVSDB remotes as OVN tools take them: `tcp:HOST:PORT`, `ssl:...`, `unix:PATH`, comma-separated. */
function ovnRemotes() {
  return z.string().max(1024).regex(/^$|^(tcp|ssl|unix):[^,\s]+(,(tcp|ssl|unix):[^,\s]+)*$/, {
    message: "OVSDB remotes such as tcp:10.0.0.1:6641,tcp:10.0.0.2:6641 (or empty)",
  });
}

export const CONFIG_FIELDS = {
  "cluster.name": z.string().min(1).max(63).regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/, {
    message: "letters, digits, '.', '_' and '-' only",
  }),
  "cluster.description": z.string().max(4096),
  "cluster.maxVoters": numeric(
    z.number().int().min(1).max(9).refine((n) => n % 2 === 1, { message: "must be odd" }),
  ),
  "raft.snapshotEntries": numeric(z.number().int().min(16).max(10_000_000)),
  "nodes.heartbeatIntervalMs": numeric(z.number().int().min(100).max(60_000)),
  "nodes.offlineAfterMs": numeric(z.number().int().min(500).max(600_000)),
  "nodes.inventoryRefreshMs": numeric(z.number().int().min(1_000).max(3_600_000)),
  "nodes.maxLeaseRenewalsPerSec": numeric(z.number().int().min(1).max(100_000)),
  "scheduler.strategy": z.enum(["spread", "pack"]),
  "scheduler.overcommit.cpu": numeric(z.number().min(0.1).max(64)),
  "scheduler.overcommit.memory": numeric(z.number().min(0.1).max(8)),
  "scheduler.overcommit.disk": numeric(z.number().min(0.1).max(64)),
  "rebalancer.enabled": boolean(),
  "rebalancer.intervalMs": numeric(z.number().int().min(1_000).max(86_400_000)),
  "rebalancer.threshold": numeric(z.number().min(0).max(1)),
  "ha.enabled": boolean(),
  "ha.leaseMs": numeric(z.number().int().min(2_000).max(300_000)),
  "migration.downtimeLimitMs": numeric(z.number().int().min(1).max(60_000)),
  "migration.maxBandwidthMiBs": numeric(z.number().int().min(1).max(100_000)),
  "migration.timeoutMs": numeric(z.number().int().min(5_000).max(86_400_000)),
  /**
   * Stop-and-copy (the guest paused for the whole memory phase) instead of live migration:
   * "auto" for TCG guests on QEMU older than 9.0, whose dirty tracking loses guest writes
   * (host/kvm/migration.ts); "always"; "never". KVM guests migrate live unless "always".
   */
  "migration.stopAndCopy": z.enum(["auto", "always", "never"]),
  "drain.parallelism": numeric(z.number().int().min(1).max(64)),
  "rebalancer.maxConcurrentMigrations": numeric(z.number().int().min(1).max(64)),
  "rebalancer.cooldownMs": numeric(z.number().int().min(0).max(86_400_000)),
  "images.replicateToAllHosts": boolean(),
  /** Largest file one upload may store (413 beyond it, the partial file deleted). */
  "images.maxUploadBytes": numeric(z.number().int().min(4096).max(2 ** 50)),
  /** Volumes may take up to this many times a pool's free space (thin qcow2 and btrfs). */
  "storage.overcommit": numeric(z.number().min(1).max(64)),
  "storage.sharedDir": z.string().max(4096).refine((p) => p === "" || p.startsWith("/"), {
    message: "must be an absolute path (or empty for none)",
  }),
  /** An external OVN's databases (`tcp:IP:6641,...`); empty: the voters run OVN central. */
  "network.ovn.northbound": ovnRemotes(),
  "network.ovn.southbound": ovnRemotes(),
  "vms.stopTimeoutMs": numeric(z.number().int().min(0).max(3_600_000)),
  "vms.consoleMaxBytes": numeric(z.number().int().min(4096).max(1024 * 1024 * 1024)),
  "vms.restartLimit": numeric(z.number().int().min(0).max(1000)),
  "vms.restartWindowMs": numeric(z.number().int().min(1_000).max(86_400_000)),
  "config.keepVersions": numeric(z.number().int().min(1).max(1_000_000)),
  "config.keepDays": numeric(z.number().min(0).max(36_500)),
  "operations.keepCount": numeric(z.number().int().min(1).max(1_000_000)),
  "operations.keepDays": numeric(z.number().min(0).max(36_500)),
  "joinTokens.keepDays": numeric(z.number().min(0).max(36_500)),
  "audit.keepCount": numeric(z.number().int().min(1).max(10_000_000)),
  "audit.keepDays": numeric(z.number().min(0).max(36_500)),
  /** Events kept for `GET /api/v1/events` resumes (core/events/log.ts). */
  "events.keepCount": numeric(z.number().int().min(10).max(1_000_000)),
} as const;

export type ConfigKey = keyof typeof CONFIG_FIELDS;
export type ClusterConfig = { [K in ConfigKey]: z.output<(typeof CONFIG_FIELDS)[K]> };

export const DEFAULT_CONFIG: ClusterConfig = {
  "cluster.name": "novactl",
  "cluster.description": "",
  "cluster.maxVoters": 3,
  "raft.snapshotEntries": 10_000,
  "nodes.heartbeatIntervalMs": 1_000,
  "nodes.offlineAfterMs": 5_000,
  "nodes.inventoryRefreshMs": 60_000,
  "nodes.maxLeaseRenewalsPerSec": 100,
  "scheduler.strategy": "spread",
  "scheduler.overcommit.cpu": 4,
  "scheduler.overcommit.memory": 1,
  "scheduler.overcommit.disk": 1,
  "rebalancer.enabled": false,
  "rebalancer.intervalMs": 300_000,
  "rebalancer.threshold": 0.2,
  "ha.enabled": true,
  "ha.leaseMs": 6_000,
  "migration.downtimeLimitMs": 50,
  "migration.maxBandwidthMiBs": 10_240,
  "migration.timeoutMs": 600_000,
  "migration.stopAndCopy": "auto",
  "drain.parallelism": 2,
  "rebalancer.maxConcurrentMigrations": 2,
  "rebalancer.cooldownMs": 600_000,
  "images.replicateToAllHosts": true,
  "images.maxUploadBytes": 64 * 2 ** 30,
  "storage.sharedDir": "",
  "storage.overcommit": 1,
  "network.ovn.northbound": "",
  "network.ovn.southbound": "",
  "vms.stopTimeoutMs": 30_000,
  "vms.consoleMaxBytes": 1024 * 1024,
  "vms.restartLimit": 3,
  "vms.restartWindowMs": 600_000,
  // Retention (pruned deterministically while applying; 0 days = no age limit).
  "config.keepVersions": 1000,
  "config.keepDays": 0,
  "operations.keepCount": 1000,
  "operations.keepDays": 30,
  "joinTokens.keepDays": 7,
  "audit.keepCount": 100_000,
  "audit.keepDays": 90,
  "events.keepCount": 10_000,
};

export function isConfigKey(key: string): key is ConfigKey {
  return Object.hasOwn(CONFIG_FIELDS, key);
}

/** Validates a partial change; every failing key is named. */
export function validateConfigPatch(patch: Record<string, unknown>): Partial<ClusterConfig> {
  const issues: FieldIssue[] = [];
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(patch)) {
    if (!isConfigKey(key)) {
      issues.push({ field: key, message: "unknown configuration key" });
      continue;
    }
    const parsed = CONFIG_FIELDS[key].safeParse(value);
    if (parsed.success) out[key] = parsed.data;
    else issues.push({ field: key, message: parsed.error.issues.map((i) => i.message).join("; ") });
  }
  if (issues.length) {
    throw new ValidationError(
      `invalid configuration: ${issues.map((i) => `${i.field}: ${i.message}`).join(", ")}`,
      issues,
    );
  }
  return out as Partial<ClusterConfig>;
}

/** Validates a complete configuration document (missing keys take defaults). */
export function validateFullConfig(doc: Record<string, unknown>): ClusterConfig {
  return { ...DEFAULT_CONFIG, ...validateConfigPatch(doc) };
}
