/**
 * Size caps and zod schemas for everything that flows into replicated state
 * from outside the leader's own code: labels (users, joining hosts), host
 * inventory, guest-agent reports, and the commands peers may propose through
 * `/internal/propose`.
 *
 * Why caps matter here: every byte accepted becomes a Raft entry that every
 * member stores, replays and snapshots forever. One request with megabytes of
 * labels (the security review's 5.6 MB) is a cluster-wide cost, not a local one.
 * So input is bounded at the edge that accepts it, and again at the leader
 * before it proposes, whatever the sender claims.
 *
 * The commands' TypeScript types (commands.ts) stay the source of truth: each
 * peer schema is tied to its command type, so a required field added there
 * and not here is a compile error.
 *
 * @module
 */
import { z } from "zod";
import type { Command, GuestInfo, Inventory } from "./commands.ts";
import { ValidationError } from "../errors/mod.ts";
import { MAX_FIELD_CHARS, MAX_RECORDS_PER_APPEND } from "./audit.ts";
import { BRIDGE_NAME, MAX_MAPPINGS, PHYSNET_NAME } from "./bridge_mappings.ts";

/** Caps on labels (Kubernetes-like rules, with a longer value). */
export const LABEL_LIMITS = {
  /** Labels on one VM or host. */
  count: 64,
  /** The name part of a key (after an optional `prefix/`). */
  nameChars: 63,
  /** The optional DNS-subdomain prefix of a key. */
  prefixChars: 253,
  valueChars: 253,
  /** All keys and values together, in UTF-8 bytes. */
  totalBytes: 16 * 1024,
} as const;

/** Caps on what a host reports about itself (strings from the OS, numbers from /proc). */
export const INVENTORY_LIMITS = {
  archChars: 32,
  kernelChars: 256,
  hostnameChars: 253,
  versionChars: 64,
  cpus: 65_536,
  /** 2^32 MiB = 4 PiB of memory. */
  memoryMiB: 2 ** 32,
  /** 2^30 GiB = 1 EiB of disk. */
  diskGiB: 2 ** 30,
  poolVolumes: 10_000_000,
  poolBytes: 2 ** 62,
} as const;

/**
 * Caps on guest-agent data: the guest is untrusted and may send anything.
 * Hosts trim to these before reporting (host/kvm/qga.ts); the leader refuses more.
 */
export const GUEST_LIMITS = {
  /** Each OS-info string (id, name, pretty name, version, kernel). */
  stringChars: 256,
  interfaces: 32,
  interfaceNameChars: 64,
  macChars: 64,
  addressesPerInterface: 32,
  /** An address with its prefix, e.g. `fe80::1/64` (the longest IPv6 text is 45 chars). */
  addressChars: 64,
} as const;

/** Longest free-text reason or error a peer may attach; longer text is cut, not refused. */
export const MAX_REASON_CHARS = 4096;
/** Largest JSON of an operation's progress or result a runner may report. */
export const MAX_OPERATION_JSON_BYTES = 64 * 1024;

// No control characters (newlines, escapes, NUL): these strings end up in
// tables, logs and terminals.
const PRINTABLE = /^[^\p{Cc}]*$/u;
const LABEL_NAME = /^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
const encoder = new TextEncoder();

/** A string of at most `max` chars without control characters. */
export function printable(max: number): z.ZodString {
  return z.string().max(max, { message: `at most ${max} characters` }).regex(PRINTABLE, {
    message: "must not contain control characters",
  });
}

/** Why a label key is invalid, or null when it is fine. */
export function labelKeyProblem(key: string): string | null {
  const slash = key.lastIndexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : null;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== null) {
    if (prefix.length === 0 || prefix.length > LABEL_LIMITS.prefixChars) {
      return `prefix must be 1-${LABEL_LIMITS.prefixChars} characters`;
    }
    if (!DNS_SUBDOMAIN.test(prefix)) {
      return "prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.')";
    }
  }
  if (name.length === 0 || name.length > LABEL_LIMITS.nameChars) {
    return `name must be 1-${LABEL_LIMITS.nameChars} characters`;
  }
  if (!LABEL_NAME.test(name)) {
    return "name must be letters, digits, '-', '_' and '.', starting and ending alphanumeric";
  }
  return null;
}

/**
 * Labels: at most 64, keys `[prefix/]name` (Kubernetes rules), values up to
 * 253 printable characters, 16 KiB in all. Issues name `labels.<key>`.
 */
export const labelsSchema = z.record(z.string(), z.string()).superRefine((labels, ctx) => {
  const keys = Object.keys(labels);
  if (keys.length > LABEL_LIMITS.count) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: `at most ${LABEL_LIMITS.count} labels (got ${keys.length})`,
    });
    return; // one issue, not thousands
  }
  let bytes = 0;
  for (const key of keys) {
    const value = labels[key];
    bytes += encoder.encode(key).length + encoder.encode(value).length;
    const keyProblem = labelKeyProblem(key);
    // The key itself may be huge or hold control characters: never echo it whole.
    const at = [keyProblem ? key.slice(0, 64).replace(/\p{Cc}/gu, "?") : key];
    if (keyProblem) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `key ${keyProblem}`, path: at });
    } else if (value.length > LABEL_LIMITS.valueChars) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        message: `value must be at most ${LABEL_LIMITS.valueChars} characters`,
        path: at,
      });
    } else if (!PRINTABLE.test(value)) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        message: "value must not contain control characters",
        path: at,
      });
    }
  }
  if (bytes > LABEL_LIMITS.totalBytes) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: `labels total ${bytes} bytes, more than ${LABEL_LIMITS.totalBytes}`,
    });
  }
});

const port = z.number().int().min(1).max(65_535);
const count = (max: number) => z.number().int().min(0).max(max);
const amount = (max: number) => z.number().finite().min(0).max(max);

/** A host's inventory, as it registers on join and refreshes after. */
export const inventorySchema: z.ZodType<Inventory> = z.object({
  cpus: count(INVENTORY_LIMITS.cpus),
  memoryMiB: amount(INVENTORY_LIMITS.memoryMiB),
  diskGiB: amount(INVENTORY_LIMITS.diskGiB),
  diskFreeGiB: amount(INVENTORY_LIMITS.diskGiB),
  accel: z.enum(["kvm", "tcg"]).nullable(),
  arch: printable(INVENTORY_LIMITS.archChars),
  kernel: printable(INVENTORY_LIMITS.kernelChars),
  hostname: printable(INVENTORY_LIMITS.hostnameChars),
  version: printable(INVENTORY_LIMITS.versionChars),
  pool: z.object({
    volumes: count(INVENTORY_LIMITS.poolVolumes),
    virtualBytes: amount(INVENTORY_LIMITS.poolBytes),
    allocatedBytes: amount(INVENTORY_LIMITS.poolBytes),
    freeBytes: amount(INVENTORY_LIMITS.poolBytes),
  }).strict().optional(),
  pools: z.record(
    z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/),
    z.object({
      totalBytes: amount(INVENTORY_LIMITS.poolBytes),
      freeBytes: amount(INVENTORY_LIMITS.poolBytes),
      allocatedBytes: amount(INVENTORY_LIMITS.poolBytes),
      volumes: count(INVENTORY_LIMITS.poolVolumes),
      error: printable(512).optional(),
    }).strict(),
  ).refine((m) => Object.keys(m).length <= 66, { message: "at most 66 pools" }).optional(),
  network: z.object({
    datapath: z.enum(["netdev", "system"]),
    tunnelIp: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/),
    bridgeMappings: z.record(z.string().regex(PHYSNET_NAME), z.string().regex(BRIDGE_NAME))
      .refine((m) => Object.keys(m).length <= MAX_MAPPINGS, {
        message: `at most ${MAX_MAPPINGS} bridge mappings`,
      }).optional(),
    central: z.object({
      address: printable(INVENTORY_LIMITS.hostnameChars),
      ports: z.object({ nb: port, sb: port, nbRaft: port, sbRaft: port }).strict(),
    }).strict(),
  }).strict().optional(),
}).strict();

/** What a host reports from a guest agent (already trimmed by the host). */
export const guestInfoSchema: z.ZodType<GuestInfo> = z.object({
  agent: z.enum(["ok", "absent"]),
  os: z.object({
    id: printable(GUEST_LIMITS.stringChars).optional(),
    name: printable(GUEST_LIMITS.stringChars).optional(),
    prettyName: printable(GUEST_LIMITS.stringChars).optional(),
    version: printable(GUEST_LIMITS.stringChars).optional(),
    kernel: printable(GUEST_LIMITS.stringChars).optional(),
  }).strict().optional(),
  interfaces: z.array(
    z.object({
      name: printable(GUEST_LIMITS.interfaceNameChars),
      mac: printable(GUEST_LIMITS.macChars).optional(),
      addresses: z.array(printable(GUEST_LIMITS.addressChars))
        .max(GUEST_LIMITS.addressesPerInterface),
    }).strict(),
  ).max(GUEST_LIMITS.interfaces).optional(),
}).strict();

// ---- commands a peer may propose -------------------------------------------------

/** Member, VM, operation and snapshot names peers refer to (all capped at creation). */
const NAME = printable(253).min(1);
const AT = z.number().int().nonnegative();
const BY = printable(256);
/** Free text a host attaches (QEMU's stderr, ...): cut to the cap rather than lose the report. */
/** Free text that is cut to its cap (the applier cuts it the same way), never refused. */
const cut = (max: number) => z.string().transform((s) => s.slice(0, max));
const REASON = cut(MAX_REASON_CHARS);
/** Every state a VM record can be in (also `vm list --state`'s choices). */
export const VM_STATE = z.enum([
  "pending",
  "scheduled",
  "starting",
  "running",
  "stopping",
  "stopped",
  "migrating",
  "failed",
]);
/** Every state a host record can be in. */
export const NODE_STATE = z.enum(["ready", "cordoned", "draining", "drained", "offline"]);
/** When a VM is restarted after it stops by itself (also `vm create --restart-policy`'s choices). */
export const RESTART_POLICY = z.enum(["never", "on-failure", "always"]);
const MIGRATION = z.object({ opId: NAME, to: NAME }).strict().nullable();

/** A JSON object of bounded size (operation progress and results). */
const boundedJson = z.record(z.string(), z.unknown()).superRefine((v, ctx) => {
  const bytes = encoder.encode(JSON.stringify(v)).length;
  if (bytes > MAX_OPERATION_JSON_BYTES) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: `${bytes} bytes of JSON, more than ${MAX_OPERATION_JSON_BYTES}`,
    });
  }
});

const DISK = z.object({
  id: NAME,
  pool: NAME.optional(),
  volume: NAME,
  sizeBytes: amount(2 ** 62),
  source: z.discriminatedUnion("kind", [
    z.object({ kind: z.literal("blank") }).strict(),
    z.object({ kind: z.literal("image"), image: NAME }).strict(),
    z.object({ kind: z.literal("volume"), volume: NAME, mode: z.enum(["linked", "full"]) })
      .strict(),
    z.object({ kind: z.literal("attached") }).strict(),
    z.object({ kind: z.literal("backup"), backup: NAME, disk: NAME }).strict(),
  ]),
  port: z.number().int().min(0).max(63).optional(),
}).strict();

/** A pool's path: absolute, printable (pools.ts checks the rest). */
const PATH = printable(1024).min(1);

/** Storage pool backends (also `pool create --driver`'s choices). */
export const POOL_DRIVERS = ["dir", "shared-dir", "btrfs"] as const;

const POOL_SPEC = z.object({
  name: NAME,
  driver: z.enum(POOL_DRIVERS),
  source: PATH.nullable(),
  node: NAME.nullable(),
  loop: z.object({ image: PATH, sizeBytes: amount(2 ** 62) }).strict().nullable(),
}).strict();

const VOLUME_SPEC = z.object({
  name: NAME,
  pool: NAME,
  node: NAME.nullable(),
  sizeBytes: amount(2 ** 62),
  fromImage: NAME.nullable(),
}).strict();

const DISPLAY = z.enum(["vga", "none"]);

/** The ops `/internal/propose` accepts from peers: what hosts report about themselves and their VMs. */
export type PeerOp =
  | "node.upsert"
  | "node.state"
  | "vm.observed"
  | "vm.devices"
  | "vm.remove"
  | "vm.desired"
  | "vm.snapshot.add"
  | "vm.snapshot.remove"
  | "vm.update"
  | "vm.migrated"
  | "operation.update"
  | "audit.append"
  | "pool.create"
  | "pool.delete"
  | "volume.create"
  | "volume.resize"
  | "volume.delete"
  | "backup.record";

type CommandOf<K extends Command["op"]> = Extract<Command, { op: K }>;

/**
 * One schema per peer-proposable command. The mapped type ties each schema's
 * output to its command type, so the two cannot drift apart silently.
 */
export const PEER_COMMAND_SCHEMAS: {
  [K in PeerOp]: z.ZodType<CommandOf<K>, z.ZodTypeDef, unknown>;
} = {
  "node.upsert": z.object({
    op: z.literal("node.upsert"),
    name: NAME,
    url: printable(2048).url(),
    inventory: inventorySchema,
    labels: labelsSchema,
    at: AT,
  }).strict(),
  "node.state": z.object({
    op: z.literal("node.state"),
    name: NAME,
    state: NODE_STATE,
    at: AT,
  }).strict(),
  "vm.observed": z.object({
    op: z.literal("vm.observed"),
    name: NAME,
    node: NAME,
    state: VM_STATE,
    reason: REASON.optional(),
    guest: guestInfoSchema.nullable().optional(),
    display: DISPLAY.nullable().optional(),
    at: AT,
  }).strict(),
  "vm.devices": z.object({
    op: z.literal("vm.devices"),
    name: NAME,
    node: NAME,
    plugged: z.object({
      disks: z.array(NAME).max(64),
      nics: z.array(z.string().regex(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/)).max(64),
    }).strict(),
    at: AT,
  }).strict(),
  "vm.remove": z.object({ op: z.literal("vm.remove"), name: NAME, node: NAME, at: AT }).strict(),
  "vm.desired": z.object({
    op: z.literal("vm.desired"),
    name: NAME,
    desired: z.enum(["running", "stopped", "deleted"]),
    keepDisks: z.boolean().optional(),
    force: z.boolean().optional(),
    at: AT,
    by: BY,
  }).strict(),
  "vm.snapshot.add": z.object({
    op: z.literal("vm.snapshot.add"),
    name: NAME,
    node: NAME,
    snapshot: z.object({
      name: NAME,
      memory: z.boolean(),
      createdAt: printable(64),
      vmState: printable(32),
      display: DISPLAY.optional(),
    }).strict(),
    at: AT,
  }).strict(),
  "vm.snapshot.remove": z.object({
    op: z.literal("vm.snapshot.remove"),
    name: NAME,
    node: NAME,
    snapshot: NAME,
    at: AT,
  }).strict(),
  "vm.update": z.object({
    op: z.literal("vm.update"),
    name: NAME,
    changes: z.object({
      cpus: z.number().int().min(1).max(1024).optional(),
      memoryMiB: z.number().int().min(1).max(INVENTORY_LIMITS.memoryMiB).optional(),
      template: z.boolean().optional(),
      restartPolicy: RESTART_POLICY.optional(),
      generation: z.number().int().nonnegative().optional(),
      disks: z.array(DISK).max(64).optional(),
      labels: labelsSchema.optional(),
      migration: MIGRATION.optional(),
    }).strict(),
    at: AT,
    by: BY,
  }).strict(),
  "vm.migrated": z.object({
    op: z.literal("vm.migrated"),
    name: NAME,
    from: NAME,
    to: NAME,
    opId: NAME,
    at: AT,
  }).strict(),
  "operation.update": z.object({
    op: z.literal("operation.update"),
    id: NAME,
    state: z.enum(["running", "succeeded", "failed", "aborted"]).optional(),
    progress: boundedJson.optional(),
    result: boundedJson.optional(),
    error: REASON.optional(),
    at: AT,
  }).strict(),
  // Pools and volumes are proposed by the host that prepared them (api/routes/pools.ts).
  "pool.create": z.object({ op: z.literal("pool.create"), pool: POOL_SPEC, by: BY, at: AT })
    .strict(),
  "pool.delete": z.object({ op: z.literal("pool.delete"), name: NAME, by: BY, at: AT }).strict(),
  "volume.create": z.object({
    op: z.literal("volume.create"),
    volume: VOLUME_SPEC,
    by: BY,
    at: AT,
  }).strict(),
  "volume.resize": z.object({
    op: z.literal("volume.resize"),
    name: NAME,
    sizeBytes: amount(2 ** 62),
    by: BY,
    at: AT,
  }).strict(),
  "volume.delete": z.object({ op: z.literal("volume.delete"), name: NAME, by: BY, at: AT })
    .strict(),
  "backup.record": z.object({
    op: z.literal("backup.record"),
    backup: z.object({
      id: NAME,
      vm: NAME,
      target: NAME,
      kind: z.enum(["full", "incremental"]),
      parent: NAME.nullable(),
      chain: NAME,
      dir: printable(1024),
      manifest: printable(1024),
      manifestSha256: z.string().regex(/^[0-9a-f]{64}$/),
      disks: z.array(
        z.object({
          id: NAME,
          file: printable(1024),
          virtualBytes: amount(2 ** 62),
          fileBytes: amount(2 ** 62),
          copiedBytes: amount(2 ** 62),
        }).strict(),
      ).max(64),
      fullReason: REASON.nullable(),
      node: NAME,
    }).strict(),
    at: AT,
  }).strict(),
  "audit.append": z.object({
    op: z.literal("audit.append"),
    records: z.array(
      z.object({
        at: AT,
        principal: cut(MAX_FIELD_CHARS),
        role: printable(32).nullable(),
        source: cut(MAX_FIELD_CHARS),
        node: NAME,
        requestId: printable(128).nullable(),
        method: printable(16),
        route: cut(MAX_FIELD_CHARS),
        path: cut(MAX_FIELD_CHARS),
        resource: cut(MAX_FIELD_CHARS).nullable(),
        code: z.number().int().min(0).max(999).nullable(),
        ms: z.number().int().min(0).max(86_400_000),
        detail: cut(MAX_FIELD_CHARS).nullable().optional(),
      }).strict(),
    ).max(MAX_RECORDS_PER_APPEND),
    at: AT,
  }).strict(),
};

/** Whether a peer may propose this op at all. */
export function isPeerOp(op: unknown): op is PeerOp {
  return typeof op === "string" && Object.hasOwn(PEER_COMMAND_SCHEMAS, op);
}

/**
 * Checks a command a peer (or this node's own host side) wants proposed:
 * returns it parsed (free text cut to its cap), or throws a ValidationError
 * naming the failing fields as `command.<path>`. An op peers may not propose
 * is refused the same way; callers that answer 403 for it check
 * {@link isPeerOp} first.
 */
export function parsePeerCommand(command: unknown): Command {
  const op = (command as { op?: unknown } | null)?.op;
  if (!isPeerOp(op)) {
    throw ValidationError.field("command.op", `not a command peers may propose`);
  }
  const parsed = PEER_COMMAND_SCHEMAS[op].safeParse(command);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => ({
      field: ["command", ...i.path].join("."),
      message: i.message,
    }));
    throw new ValidationError(
      `malformed ${op}: ${issues.map((i) => `${i.field}: ${i.message}`).join("; ")}`,
      issues,
    );
  }
  return parsed.data as Command;
}
