/**
 * /api/v1/vms: lifecycle decisions go to the leader; the console and other work on a
 * VM's disks or QEMU go to its host. Snapshots are operations (the leader checks and
 * records them, the VM's host runs them) once the cluster's level allows; below it they
 * run on the VM's host, as release 0.1.0 ran them.
 */
import { type Context, Hono } from "hono";
import { z } from "zod";
import {
  cloneVm,
  type ClusterNode,
  createVm,
  markTemplate,
  migrateVm,
  resizeVm,
  restartVm,
  setVmDesired,
  type SnapshotOperationKind,
  startSnapshot,
  startSnapshotDelete,
  startSnapshotRestore,
  type Tracked,
  type VmWaitTarget,
  waitForVm,
  waitForVmOperation,
} from "../../core/cluster/mod.ts";
import { NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import type { VmHost } from "../../host/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { FORWARDED_HEADER, hostOnly, leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import { labelsSchema, VM_STATE } from "../../core/fsm/command_schemas.ts";
import { SECURITY_GROUP_LIMITS } from "../../core/fsm/security_groups.ts";
import {
  MAX_PASSWORD_HASH_CHARS,
  MAX_SSH_KEY_CHARS,
  MAX_USER_DATA_BYTES,
  redactVm,
} from "../../core/cloudinit/mod.ts";
import type { Env } from "../context.ts";
import { VmListing } from "../vm_listing.ts";
import { jsonJoined } from "../json_body.ts";
import { viewWithAddressChecks } from "../../core/network/mod.ts";
import { vmNicRoutes } from "./vm_nics.ts";
import { vmDiskRoutes } from "./volumes.ts";
import { vmStatsRoutes } from "./stats.ts";
import type { MetricsSampler } from "../../host/metrics/mod.ts";
import type { Role, VmQuery, VmRecord } from "../../core/fsm/mod.ts";
import { doc, parseQuery, queryFlag } from "../openapi/mod.ts";
import {
  deletedSchema,
  listOf,
  operationSchema,
  placementSchema,
  trackedDeletedVmSchema,
  trackedVmSchema,
  vmListSchema,
  vmSchema,
} from "../openapi/schemas.ts";
import { withEtags } from "../etag.ts";
import { afterOf, continueToken, isString, pagedList, pageQuery } from "../pagination.ts";
import { operationKindAllowed } from "../../core/upgrade/levels.ts";
import { operationAnswer, operationWaitSeconds } from "./operations.ts";
import { viewWithPlugged } from "../../core/fsm/vm_devices.ts";

const NAME = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});
const SNAPSHOT_NAME = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/, {
  message: "letters, digits, '.', '_' and '-' (1-63 chars)",
});
const CPUS = z.number().int().min(1).max(256);
const MEMORY_MIB = z.number().int().min(16).max(4 * 1024 * 1024);
const DISK_GIB = z.number().int().min(1).max(65_536);

/** NICs on one VM: virtio-net devices, each a PCI slot. */
const MAX_NICS = 8;

/** Mirrors the CLI flags of `vm create`. */
export const createVmSchema = z.object({
  name: NAME,
  image: z.string().min(1).max(63).optional(),
  fromTemplate: NAME.optional(),
  cpus: CPUS.optional(),
  memoryMiB: MEMORY_MIB.optional(),
  diskGiB: DISK_GIB.optional(),
  node: z.string().min(1).max(63).optional(),
  ha: z.boolean().default(false),
  start: z.boolean().default(true),
  labels: labelsSchema.default({}),
  restartPolicy: z.enum(["never", "on-failure", "always"]).optional(),
  group: z.string().min(1).max(63).optional(),
  constraints: z.array(
    z.object({
      key: z.string().min(1).max(253),
      op: z.enum(["=", "!="]),
      value: z.string().max(253),
    }).strict(),
  ).max(32).optional(),
  strategy: z.enum(["spread", "pack"]).optional(),
  haPriority: z.number().int().min(0).max(1000).optional(),
  haMaxRestarts: z.number().int().min(0).max(1000).optional(),
  haRestartWindowMs: z.number().int().min(1_000).max(30 * 86_400_000).optional(),
  pool: z.string().min(1).max(63).optional(),
  dryRun: z.boolean().optional(),
  nics: z.array(
    z.object({
      network: z.string().min(1).max(63),
      ip: z.string().max(15).optional(),
      mac: z.string().max(17).optional(),
      securityGroups: z.array(z.string().max(63)).max(SECURITY_GROUP_LIMITS.groupsPerNic)
        .optional(),
    }).strict(),
  ).max(MAX_NICS, `at most ${MAX_NICS} NICs`).optional(),
  cloudInit: z.object({
    user: z.string().max(32).optional(),
    sshKeys: z.array(z.string().max(MAX_SSH_KEY_CHARS)).max(64).optional(),
    passwordHash: z.string().max(MAX_PASSWORD_HASH_CHARS).optional(),
    userData: z.string().max(MAX_USER_DATA_BYTES).optional(),
  }).strict().optional(),
}).strict().refine((v) => !!v.image !== !!v.fromTemplate, {
  message: "give exactly one of image or fromTemplate",
  path: ["image"],
});

const cloneSchema = z.object({
  name: NAME,
  mode: z.enum(["linked", "full"]).optional(),
  start: z.boolean().default(false),
}).strict();

const resizeSchema = z.object({
  cpus: CPUS.optional(),
  memoryMiB: MEMORY_MIB.optional(),
  diskGiB: DISK_GIB.optional(),
}).strict();

const migrateSchema = z.object({ to: z.string().min(1).optional() }).strict();

const snapshotSchema = z.object({
  name: SNAPSHOT_NAME,
  memory: z.boolean().default(false),
}).strict();
const snapshotOpQuery = z.object({ wait: operationWaitSeconds });
/** A forwarded snapshot call may wait for its operation (`?wait`, at most 300 s) or run on its host. */
const SNAPSHOT_FORWARD = { timeoutMs: 330_000 };

/**
 * `GET /api/v1/vms?node=&state=&label=k=v&limit=&continue=`: filters (labels repeat,
 * all must match) and a page. The continue token is opaque to clients: pass it back.
 */
const vmListQuery = pageQuery.extend({
  node: z.string().optional(),
  state: VM_STATE.optional(),
  label: z.string().optional().describe("key=value; repeat it: every label must match"),
});

function vmQueryOf(query: z.output<typeof vmListQuery>, labels: string[]): VmQuery {
  const q: VmQuery = {};
  if (query.node) q.node = query.node;
  if (query.state !== undefined) q.state = query.state;
  for (const label of labels) {
    const eq = label.indexOf("=");
    if (eq <= 0) throw ValidationError.field("label", `"${label}" is not key=value`);
    (q.labels ??= {})[label.slice(0, eq)] = label.slice(eq + 1);
  }
  if (query.limit !== undefined) q.limit = Number(query.limit);
  const after = afterOf("vms", query.continue, isString);
  if (after !== undefined) q.after = after;
  return q;
}

const waitQuery = z.object({
  // `deleted` never comes: the wait ends with 404 once the VM is gone (`vm delete --wait`).
  state: z.enum([...VM_STATE.options, "deleted"]).optional().describe(
    "the state to wait for (default running)",
  ),
  timeoutMs: z.string().regex(/^\d+$/).optional().describe("at most 300000 (default 60000)"),
});
/**
 * `?wait=SECONDS` on a lifecycle call: hold the answer until the VM settles (200, or 201 for a
 * create), else answer 202 with its record while it is still on its way.
 */
const waitSeconds = z.string().regex(/^\d+$/).optional().describe(
  "wait up to this many seconds (at most 300) for the action's operation to end (the VM to " +
    "settle): 200 when it did (or failed), 202 with its record while still on its way; " +
    "absent: 202 at once with the operation",
);
const lifecycleQuery = z.object({ wait: waitSeconds });
const createQuery = z.object({ wait: waitSeconds });
const stopQuery = z.object({
  force: queryFlag.describe("kill instead of a guest power-off"),
  wait: waitSeconds,
});
const deleteQuery = z.object({
  force: queryFlag.describe("kill instead of a guest power-off"),
  keepDisks: queryFlag.describe("leave the VM's volumes in their pool"),
  wait: waitSeconds,
});
const consoleQuery = z.object({
  bytes: z.string().regex(/^\d+$/).optional().describe("the log's last N bytes (default 65536)"),
  follow: queryFlag.describe("stream what the guest prints next"),
});

export function vmRoutes(
  node: ClusterNode,
  host: VmHost,
  stats?: MetricsSampler,
): Hono<Env> {
  const app = new Hono<Env>();
  const listing = new VmListing(node.fsm);
  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => node.fsm.vm(c.req.param("name") ?? ""));
  const who = (c: { get(k: "principal"): { name: string } }) => c.get("principal").name;
  // Only admins see cloud-init secrets (password hash, user-data) in anything returning a VM.
  // NICs carry their guest-address check (core/network/guest_addresses.ts).
  const shown = <T>(c: { get(k: "principal"): { role: Role } }, v: T): T =>
    redactVm(viewWithPlugged(viewWithAddressChecks(v)), c.get("principal").role);
  const vmOr404 = (name: string) => {
    const vm = node.fsm.vm(name);
    if (!vm) throw new NotFoundError("vm", name);
    return vm;
  };

  /**
   * The answer to a lifecycle call. With an operation (cluster level 2; not for a create that
   * does not start): 202 at once with the VM, its operation and `Location` naming it. With
   * `?wait=SECONDS`: once the operation ended (or, without one, the VM settled in `want`)
   * with `done`, else 202 at the deadline, still on its way.
   */
  const settledAnswer = async (
    c: Context<Env>,
    tracked: Tracked<VmRecord | { name: string; deleted: true }>,
    want: VmWaitTarget,
    wait: string | undefined,
    done: 200 | 201 = 200,
  ) => {
    const { operation: brief, ...record } = tracked;
    const withOp = <T extends object>(body: T) =>
      brief ? { ...body, operation: node.fsm.operation(brief.id) ?? brief } : body;
    if (brief) c.header("Location", `/api/v1/operations/${brief.id}`);
    if (wait === undefined) return c.json(withOp(shown(c, record)), brief ? 202 : done);
    const timeoutMs = Number(wait) * 1000;
    const signal = c.req.raw.signal;
    if (brief) {
      const op = await waitForVmOperation(node, brief.id, { timeoutMs, signal });
      const vm = node.fsm.vm(record.name);
      const body = vm ? shown(c, vm) : { name: record.name, deleted: true };
      return c.json(withOp(body), op?.state === "running" ? 202 : done);
    }
    if ("deleted" in record) return c.json(shown(c, record), done);
    const { vm, settled } = await waitForVm(node, record.name, want, {
      timeoutMs,
      signal,
      since: record,
    });
    const status = settled ? done : 202;
    return c.json(vm ? shown(c, vm) : { name: record.name, deleted: true }, status);
  };

  app.get("/", doc({ summary: "List VMs", query: vmListQuery, response: vmListSchema }), (c) => {
    const q = vmQueryOf(parseQuery(c, vmListQuery), c.req.queries("label") ?? []);
    const page = listing.page(q, c.get("principal").role);
    const more = page.lastName === null
      ? ""
      : `,"continue":${JSON.stringify(continueToken("vms", page.lastName))}`;
    const body = jsonJoined(`{"vms":[`, page.items, `]${more}}`);
    return c.body(body, 200, { "content-type": "application/json" });
  });
  const getDoc = doc({ summary: "Show a VM", response: vmSchema });
  app.get("/:name", getDoc, (c) => c.json(shown(c, vmOr404(c.req.param("name")))));

  // Long-poll: answers when the VM reaches `state` (or fails, or is deleted: 404), or at the
  // timeout with its current record. Woken by applied changes, not by polling.
  const waitDoc = doc({
    summary: "Wait until a VM reaches a state (or fails); at the timeout, its current record",
    query: waitQuery,
    response: vmSchema,
  });
  app.get("/:name/wait", waitDoc, async (c) => {
    const name = c.req.param("name");
    const q = parseQuery(c, waitQuery);
    const want = q.state ?? "running";
    const timeoutMs = Number(q.timeoutMs ?? 60_000) || 60_000;
    const { vm } = await waitForVm(node, name, want, { timeoutMs, signal: c.req.raw.signal });
    if (!vm) throw new NotFoundError("vm", name);
    return c.json(shown(c, vm));
  });

  const createDoc = doc({
    summary:
      "Create a VM (and start it unless start is false: 202 with its operation); dryRun: 200 with the placement",
    body: createVmSchema,
    query: createQuery,
    responses: { 201: trackedVmSchema, 200: placementSchema, 202: trackedVmSchema },
    status: [201, 200, 202],
    locationOn: 202,
  });
  app.post("/", createDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const req = await parseBody(c, createVmSchema);
    const { wait } = parseQuery(c, createQuery);
    const r = await createVm(node, req, who(c));
    if (req.dryRun) return c.json(r, 200);
    const vm = r as Tracked<VmRecord>;
    return await settledAnswer(c, vm, req.start === false ? vm.state : "running", wait, 201);
  });

  const lifecycle = (summary: string, query?: z.AnyZodObject) =>
    doc({ summary, response: vmSchema, ...(query ? { query } : {}) });
  const settling = (
    summary: string,
    query: z.AnyZodObject,
    response: z.ZodTypeAny = trackedVmSchema,
  ) =>
    doc({
      summary,
      query,
      responses: { 200: response, 202: response },
      status: [202, 200],
      locationOn: 202,
    });
  const startDoc = settling(
    "Start a VM: 202 with its operation (?wait=SECONDS: 200 once it runs or failed)",
    lifecycleQuery,
  );
  app.post("/:name/start", startDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const { wait } = parseQuery(c, lifecycleQuery);
    const vm = await setVmDesired(node, c.req.param("name"), "running", who(c));
    return await settledAnswer(c, vm, "running", wait);
  });

  const stopDoc = settling(
    "Stop a VM: 202 with its operation (?wait=SECONDS: 200 once it stopped or failed)",
    stopQuery,
  );
  app.post("/:name/stop", stopDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const q = parseQuery(c, stopQuery);
    const force = q.force === "true";
    const vm = await setVmDesired(node, c.req.param("name"), "stopped", who(c), { force });
    return await settledAnswer(c, vm, "stopped", q.wait);
  });

  const restartDoc = settling(
    "Restart a VM: 202 with its operation (?wait=SECONDS: 200 once it runs again or failed)",
    lifecycleQuery,
  );
  app.post("/:name/restart", restartDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const { wait } = parseQuery(c, lifecycleQuery);
    const vm = await restartVm(node, c.req.param("name"), who(c));
    return await settledAnswer(c, vm, "running", wait);
  });

  const deleteDoc = settling(
    "Delete a VM once its host cleaned up: 202 with its operation (?wait=SECONDS: 200 once gone)",
    deleteQuery,
    z.union([trackedVmSchema, trackedDeletedVmSchema]),
  );
  app.delete("/:name", deleteDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const q = parseQuery(c, deleteQuery);
    const force = q.force === "true";
    const keepDisks = q.keepDisks === "true";
    const vm = await setVmDesired(node, c.req.param("name"), "deleted", who(c), {
      force,
      keepDisks,
    });
    return await settledAnswer(c, vm, "deleted", q.wait);
  });

  const resizeDoc = doc({ summary: "Resize a VM", body: resizeSchema, response: vmSchema });
  app.post("/:name/resize", resizeDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const req = await parseBody(c, resizeSchema);
    return c.json(shown(c, await resizeVm(node, c.req.param("name"), req, who(c))));
  });

  const cloneDoc = doc({
    summary: "Clone a VM (linked from a template, else full)",
    body: cloneSchema,
    response: vmSchema,
    status: 201,
  });
  app.post("/:name/clone", cloneDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const req = await parseBody(c, cloneSchema);
    const src = vmOr404(c.req.param("name"));
    const mode = req.mode ?? (src.template ? "linked" : "full");
    const created = await cloneVm(
      node,
      src.name,
      {
        name: req.name,
        ha: false,
        start: req.start,
        labels: {},
      },
      mode,
      who(c),
    );
    return c.json(shown(c, created), 201);
  });

  const migrateDoc = doc({
    summary: "Live-migrate a VM (to a chosen host, or the scheduler's pick): its operation",
    body: migrateSchema,
    response: operationSchema,
    status: 202,
  });
  app.post("/:name/migrate", migrateDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const req = await parseBody(c, migrateSchema);
    return c.json(await migrateVm(node, c.req.param("name"), req, who(c)), 202);
  });

  const templateDoc = lifecycle("Make a stopped VM a template (the base of linked clones)");
  app.post("/:name/template", templateDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    return c.json(shown(c, await markTemplate(node, c.req.param("name"), who(c))));
  });

  // The serial console can show what guests print (passwords, keys): not for viewers.
  const getConsoleDoc = doc({
    summary: "The serial console's log",
    query: consoleQuery,
    responseType: "text/plain",
  });
  app.get(
    "/:name/console",
    getConsoleDoc,
    requireRole("operator"),
    hostOnly(node, { timeoutMs: null }),
    async (c) => {
      const q = parseQuery(c, consoleQuery);
      const bytes = Math.min(Number(q.bytes ?? 65_536) || 65_536, 16 << 20);
      const name = c.req.param("name");
      const headers = { "content-type": "text/plain; charset=utf-8" };
      if (q.follow === "true") {
        return new Response(await host.followConsole(name, c.req.raw.signal, bytes), { headers });
      }
      return new Response(await host.console(name, bytes), { headers });
    },
  );

  app.route("/", vmNicRoutes(node));
  app.route("/", vmDiskRoutes(node));
  app.route("/", vmStatsRoutes(node, stats));

  const snapshotsDoc = doc({
    summary: "List a VM's snapshots, oldest first",
    query: pageQuery,
    response: listOf("snapshots", vmSchema.shape.snapshots.element),
  });
  app.get("/:name/snapshots", snapshotsDoc, (c) => {
    const snapshots = vmOr404(c.req.param("name")).snapshots;
    const spec = {
      list: "snapshots",
      key: (s: VmRecord["snapshots"][number]) => [s.createdAt, s.name],
    };
    return c.json(pagedList("snapshots", snapshots, parseQuery(c, pageQuery), spec));
  });

  // Take, restore and delete are operations once the cluster's level allows them
  // (core/upgrade/levels.ts OPERATION_KIND_LEVEL), run by the VM's host (host/snapshots/):
  // the leader refuses what would fail at once, then answers 202 (or waits with ?wait).
  // Below that level they run as release 0.1.0 ran them: at once on the VM's host, answered
  // when done (201 / 200), since a 0.1.0 host would never run the operation. `?wait` is then
  // met by the call itself.
  const snapshotOf = (vm: string, snap: string) =>
    node.fsm.vm(vm)?.snapshots.find((s) => s.name === snap);
  const asOperation = (c: Context<Env>, kind: SnapshotOperationKind): boolean => {
    if (!operationKindAllowed(kind, node.fsm.clusterLevel())) return false;
    // A member still below that level (a 0.1.0 leader, or one yet to apply the upgrade)
    // forwarded it to the VM's host, as 0.1.0 does: run it here, not back to the leader.
    const forwardedToItsHost = c.req.header(FORWARDED_HEADER) !== undefined &&
      !node.isLeader() && node.fsm.vm(c.req.param("name") ?? "")?.node === node.id;
    return !forwardedToItsHost;
  };
  const snapshotCall = (
    kind: SnapshotOperationKind,
    operation: (c: Context<Env>) => Promise<Response>,
    atOnce: (c: Context<Env>) => Promise<Response>,
  ) =>
  async (c: Context<Env>) => {
    const viaOperation = asOperation(c, kind);
    const place = viaOperation ? leaderOnly : hostOnly;
    await place(node, SNAPSHOT_FORWARD)(c, async () => {
      c.res = await (viaOperation ? operation : atOnce)(c);
    });
    return c.res;
  };

  const snapshotDoc = doc({
    summary:
      "Snapshot a VM's disks (and memory): its operation (?wait=SECONDS, or below cluster level 2: the snapshot)",
    body: snapshotSchema,
    query: snapshotOpQuery,
    responses: { 201: vmSchema.shape.snapshots.element, 202: operationSchema },
    status: [202, 201],
    locationOn: 202,
  });
  app.post(
    "/:name/snapshots",
    snapshotDoc,
    requireRole("operator"),
    snapshotCall("snapshot-create", async (c) => {
      const req = await parseBody(c, snapshotSchema);
      const { wait } = parseQuery(c, snapshotOpQuery);
      const vm = c.req.param("name")!;
      const op = await startSnapshot(
        node,
        { vm, snapshot: req.name, memory: req.memory },
        who(c),
      );
      return await operationAnswer(c, node, op, wait, (done) => {
        const { vm: _, snapshot, ms: _ms, ...taken } = done.result ?? {};
        return c.json(snapshotOf(vm, req.name) ?? { name: snapshot, ...taken }, 201);
      });
    }, async (c) => {
      const req = await parseBody(c, snapshotSchema);
      parseQuery(c, snapshotOpQuery);
      return c.json(await host.createSnapshot(c.req.param("name")!, req.name, req.memory), 201);
    }),
  );

  const restoreDoc = doc({
    summary:
      "Restore a VM to a snapshot: its operation (?wait=SECONDS, or below cluster level 2: the VM)",
    query: snapshotOpQuery,
    responses: { 200: vmSchema, 202: operationSchema },
    status: [202, 200],
    locationOn: 202,
  });
  app.post(
    "/:name/snapshots/:snap/restore",
    restoreDoc,
    requireRole("operator"),
    snapshotCall("snapshot-restore", async (c) => {
      const { wait } = parseQuery(c, snapshotOpQuery);
      const vm = c.req.param("name")!;
      const snapshot = c.req.param("snap")!;
      const op = await startSnapshotRestore(node, { vm, snapshot }, who(c));
      return await operationAnswer(c, node, op, wait, () => c.json(shown(c, vmOr404(vm))));
    }, async (c) => {
      parseQuery(c, snapshotOpQuery);
      const restored = await host.restoreSnapshot(c.req.param("name")!, c.req.param("snap")!);
      return c.json(shown(c, restored));
    }),
  );

  const deleteSnapshotDoc = doc({
    summary:
      "Delete a snapshot: its operation (?wait=SECONDS, or below cluster level 2: what was deleted)",
    query: snapshotOpQuery,
    responses: { 200: deletedSchema, 202: operationSchema },
    status: [202, 200],
    locationOn: 202,
  });
  app.delete(
    "/:name/snapshots/:snap",
    deleteSnapshotDoc,
    requireRole("operator"),
    snapshotCall("snapshot-delete", async (c) => {
      const { wait } = parseQuery(c, snapshotOpQuery);
      const snapshot = c.req.param("snap")!;
      const op = await startSnapshotDelete(node, { vm: c.req.param("name")!, snapshot }, who(c));
      return await operationAnswer(c, node, op, wait, () => c.json({ deleted: snapshot }));
    }, async (c) => {
      parseQuery(c, snapshotOpQuery);
      const snapshot = c.req.param("snap")!;
      await host.deleteSnapshot(c.req.param("name")!, snapshot);
      return c.json({ deleted: snapshot });
    }),
  );

  return app;
}
