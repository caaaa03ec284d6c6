/**
 * Response schemas of the public API, for the OpenAPI document (api/openapi/document.ts) and
 * the tests that hold real answers to it. Objects allow fields beyond those listed (newer
 * servers add fields; clients must ignore what they do not know). The `satisfies`-style checks
 * at the end make a change to the records these describe a compile error here.
 *
 * @module
 */
import { z } from "zod";
import { inventorySchema, NODE_STATE, VM_STATE } from "../../core/fsm/command_schemas.ts";
import type { ImageRecord, NodeRecord, OperationRecord, VmRecord } from "../../core/fsm/mod.ts";
import type { ClusterStatus } from "../../core/cluster/mod.ts";

const NAMES = new WeakMap<z.ZodTypeAny, string>();

/** Gives `schema` a name: the document shows it once, under components.schemas. */
export function named<T extends z.ZodTypeAny>(name: string, schema: T): T {
  NAMES.set(schema, name);
  return schema;
}

/** The component name of `schema`, if {@link named} gave it one. */
export function nameOf(schema: z.ZodTypeAny): string | undefined {
  return NAMES.get(schema);
}

/** `{"error":{"code","message","details"}}`, the body of every error answer (api/errors.ts). */
export const errorSchema = named(
  "Error",
  z.object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      details: z.unknown().optional(),
    }),
  }),
);

/** A list answer: `{ KEY: [...] }`, plus `continue` when a page is cut short. */
export function listOf<K extends string, T extends z.ZodTypeAny>(key: K, item: T) {
  return z.object({ [key]: z.array(item) } as { [k in K]: z.ZodArray<T> }).extend({
    continue: z.string().optional().describe(
      "present when more items follow: pass it back as ?continue= for the next page",
    ),
  });
}

/** A record this document does not detail yet: some JSON object. */
export const recordSchema = z.object({});

/** `{ "deleted": NAME }`: what deletes answer. */
export const deletedSchema = named(
  "Deleted",
  z.object({ deleted: z.union([z.string(), z.number()]) }),
);

/** A VM delete that needed no host (never placed), or one `?wait` saw finish. */
export const deletedVmSchema = named(
  "DeletedVm",
  z.object({ name: z.string(), deleted: z.literal(true) }),
);

const labels = z.record(z.string(), z.string());
const isoTime = z.string();

const blobRef = z.object({ sha256: z.string(), size: z.number().int() });

const plugged = z.boolean().nullable().optional().describe(
  "in the VM's running QEMU (its host reports it, cluster level 2); null: the VM does not " +
    "run, or its host has not reported",
);

const vmDisk = z.object({
  id: z.string(),
  pool: z.string().optional(),
  volume: z.string(),
  sizeBytes: z.number(),
  source: z.object({ kind: z.string() }),
  port: z.number().int().optional(),
  plugged,
});

const vmNic = z.object({
  network: z.string(),
  ip: z.string().nullable().optional(),
  mac: z.string().nullable().optional(),
  securityGroups: z.array(z.string()).optional(),
  index: z.number().int().optional(),
  plugged,
});

/** A VM's disk, with whether its running QEMU has it plugged. */
export const vmDiskSchema = named("VmDisk", vmDisk);

/** A VM's NIC, with whether its running QEMU has it plugged. */
export const vmNicSchema = named(
  "VmNic",
  vmNic.extend({
    guestIps: z.array(z.string()).nullable().optional(),
    ipStatus: z.string().optional(),
  }),
);

/** What a detach answers: the disk, and whether the running QEMU still has it. */
export const detachedDiskSchema = named(
  "DetachedDisk",
  z.object({ detached: vmDisk, plugged }),
);

/** What a NIC removal answers: the NIC, and whether the running QEMU still has it. */
export const removedNicSchema = named("RemovedNic", z.object({ removed: vmNic, plugged }));

export const vmSchema = named(
  "Vm",
  z.object({
    name: z.string(),
    uuid: z.string(),
    image: z.string(),
    cpus: z.number().int(),
    memoryMiB: z.number().int(),
    node: z.string().nullable(),
    ha: z.boolean(),
    labels,
    desired: z.enum(["running", "stopped", "deleted"]),
    restartPolicy: z.enum(["never", "on-failure", "always"]),
    disks: z.array(vmDisk),
    cloudInit: z.object({
      user: z.string().optional(),
      sshKeys: z.array(z.string()).optional(),
      passwordHash: z.string().optional(),
      userData: z.string().optional(),
    }).nullable(),
    template: z.boolean(),
    generation: z.number().int(),
    keepDisks: z.boolean().optional(),
    force: z.boolean().optional(),
    snapshots: z.array(
      z.object({
        name: z.string(),
        memory: z.boolean(),
        createdAt: isoTime,
        vmState: z.string(),
        display: z.enum(["vga", "none"]).optional().describe(
          "a memory snapshot's display device; absent: none",
        ),
      }),
    ),
    group: z.string().optional(),
    nics: z.array(vmNic).optional(),
    constraints: z.array(
      z.object({ key: z.string(), op: z.enum(["=", "!="]), value: z.string() }),
    ).optional(),
    strategy: z.enum(["spread", "pack"]).optional(),
    haPriority: z.number().int().optional(),
    haMaxRestarts: z.number().int().optional(),
    haRestartWindowMs: z.number().int().optional(),
    migration: z.object({ opId: z.string(), to: z.string() }).nullable().optional(),
    display: z.enum(["vga", "none"]).nullable().optional().describe(
      "the display device of the VM's QEMU (its VNC console shows it); null: not running",
    ),
    plugged: z.object({ disks: z.array(z.string()), nics: z.array(z.string()) }).nullable()
      .optional().describe(
        "what the VM's running QEMU has plugged (attached volumes by name, NICs by MAC), as " +
          "its host reports it (cluster level 2); null: not running",
      ),
    state: VM_STATE,
    reason: z.string().nullable(),
    guest: z.object({ agent: z.enum(["ok", "absent"]) }).nullable(),
    createdAt: isoTime,
    updatedAt: isoTime,
  }),
);

/** A `vm create` dry run: where the VM would go, each host's score, and why others were not. */
export const placementSchema = named(
  "Placement",
  z.object({
    dryRun: z.literal(true),
    name: z.string(),
    node: z.string().nullable(),
    strategy: z.enum(["spread", "pack"]),
    scores: z.record(z.string(), z.number()),
    rejected: z.record(z.string(), z.unknown()),
  }),
);

export const vmListSchema = named(
  "VmList",
  listOf("vms", vmSchema),
);

export const nodeSchema = named(
  "Node",
  z.object({
    name: z.string(),
    url: z.string(),
    state: z.union([NODE_STATE, z.string()]).describe(
      "the host's scheduling state, or its Raft member state when it is a member",
    ),
    labels,
    inventory: inventorySchema.nullable(),
    joinedAt: isoTime,
    updatedAt: isoTime,
    role: z.enum(["voter", "learner"]).nullable(),
    bridgeMappings: z.record(z.string(), z.string()),
    meta: z.record(z.string(), z.string()).describe(
      "an operator's metadata on the host (`node meta`, cluster level 2)",
    ),
  }),
);

export const nodeListSchema = named("NodeList", listOf("nodes", nodeSchema));

export const imageSchema = named(
  "Image",
  z.object({
    name: z.string(),
    kind: z.enum(["kernel", "disk"]),
    kernel: blobRef.optional(),
    initrd: blobRef.optional(),
    cmdline: z.string().optional(),
    disk: blobRef.extend({ virtualBytes: z.number().int() }).optional(),
    sources: z.array(z.string()),
    createdAt: isoTime,
    createdBy: z.string(),
  }),
);

export const imageListSchema = named("ImageList", listOf("images", imageSchema));

export const operationSchema = named(
  "Operation",
  z.object({
    id: z.string(),
    kind: z.enum([
      "migrate",
      "drain",
      "evacuate",
      "rebalance",
      "backup",
      "restore",
      "verify",
      "snapshot-create",
      "snapshot-restore",
      "snapshot-delete",
      "create",
      "start",
      "stop",
      "restart",
      "delete",
    ]),
    target: z.string(),
    runner: z.string(),
    params: z.record(z.string(), z.unknown()),
    by: z.string(),
    requestId: z.string().optional(),
    state: z.enum(["running", "succeeded", "failed", "aborted"]),
    progress: z.record(z.string(), z.unknown()),
    result: z.record(z.string(), z.unknown()).nullable(),
    error: z.string().nullable(),
    createdAt: isoTime,
    updatedAt: isoTime,
  }),
);

/**
 * A VM lifecycle call's answer (create-and-start, start, stop, restart, delete): the VM as the
 * call left it, and at cluster level 2 the operation that follows it
 * (`/api/v1/operations/ID`, also in the `Location` header of a 202).
 */
export const trackedVmSchema = named(
  "TrackedVm",
  vmSchema.extend({ operation: operationSchema.optional() }),
);

/** A delete's answer once the VM is gone, with its operation (cluster level 2). */
export const trackedDeletedVmSchema = named(
  "TrackedDeletedVm",
  deletedVmSchema.extend({ operation: operationSchema.optional() }),
);

export const operationListSchema = named(
  "OperationList",
  listOf("operations", operationSchema),
);

export const clusterStatusSchema = named(
  "ClusterStatus",
  z.object({
    clusterId: z.string(),
    level: z.number().int().describe("the cluster level the state is at (rolling upgrades)"),
    self: z.string(),
    leader: z.string().nullable(),
    term: z.number().int(),
    commitIndex: z.number().int(),
    appliedIndex: z.number().int(),
    lastIndex: z.number().int(),
    snapshotIndex: z.number().int(),
    members: z.array(
      z.object({
        name: z.string(),
        url: z.string(),
        role: z.enum(["voter", "learner"]),
        state: z.string(),
        version: z.string().nullable().describe("the novactl version it last reported"),
        lastContactMs: z.number().nullable(),
        match: z.number().nullable(),
      }),
    ),
    caFingerprint: z.string(),
  }),
);

/** A placement group and the VMs in it. */
export const groupSchema = named(
  "Group",
  z.object({
    name: z.string(),
    policy: z.enum(["affinity", "anti-affinity"]),
    strict: z.boolean(),
  }),
);

export const groupListSchema = named(
  "GroupList",
  listOf("groups", groupSchema.extend({ members: z.array(z.string()) })),
);

/** The wire types of these answers, for clients (the CLI, the dashboard). */
export type ApiError = z.output<typeof errorSchema>;
export type VmView = z.output<typeof vmSchema>;
export type VmList = z.output<typeof vmListSchema>;
export type NodeView = z.output<typeof nodeSchema>;
export type ImageView = z.output<typeof imageSchema>;
export type OperationView = z.output<typeof operationSchema>;
export type ClusterStatusView = z.output<typeof clusterStatusSchema>;

// Compile-time drift checks: each record must still fit its schema's type.
type Fits<Record, Schema extends z.ZodTypeAny> = Record extends z.input<Schema> ? true : never;
const _fits: [
  Fits<VmRecord, typeof vmSchema>,
  Fits<ImageRecord, typeof imageSchema>,
  Fits<OperationRecord, typeof operationSchema>,
  Fits<ClusterStatus & { caFingerprint: string }, typeof clusterStatusSchema>,
  Fits<
    NodeRecord & {
      role: "voter" | null;
      bridgeMappings: Record<string, string>;
      meta: Record<string, string>;
    },
    typeof nodeSchema
  >,
] = [true, true, true, true, true];
void _fits;
