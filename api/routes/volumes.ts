/**
 * /api/v1/volumes: volumes (core/fsm/volumes.ts), and /api/v1/vms/:name/disks: attaching
 * them to VMs (core/fsm/vm_disks.ts).
 *
 * Volumes; each request runs on the host that holds the volume (its pool's host, `node` for
 * a pool on every host, or, for a shared-dir pool, the member that took it):
 * - `POST /` `{name, pool, sizeBytes, fromImage?, node?}`: refused (409) beyond the pool's
 *   free space on that host times `storage.overcommit`; the host makes it, then records it
 * - `GET /`; `GET /:name`
 * - `POST /:name/resize` `{sizeBytes}`: grows it (a running VM's disk through QMP
 *   `block_resize`, on the VM's host)
 * - `DELETE /:name` (409 while attached)
 *
 * VM disks:
 * - `GET /api/v1/vms/:name/disks`
 * - `POST /api/v1/vms/:name/disks` `{volume}` attaches (a running VM's host hot-plugs it)
 * - `DELETE /api/v1/vms/:name/disks/:disk` detaches a volume (by name or disk id); the root
 *   disk of a running VM is refused
 * - both take `?wait=SECONDS` (./hotplug_wait.ts); each disk shows `plugged`: in the
 *   running QEMU or not, null while the VM does not run
 *
 * @module
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { ConflictError, NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import type { VmDisk, VolumeRecord, VolumeSpec } from "../../core/fsm/mod.ts";
import { diskPlugged } from "../../core/fsm/vm_devices.ts";
import { plugAnswer, plugQuery } from "./hotplug_wait.ts";
import { VOLUME_NAME } from "../../core/fsm/volumes.ts";
import type { VmHost } from "../../host/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import { authorship, type Env } from "../context.ts";
import { onMember } from "./pools.ts";
import { pagedList, pageQuery } from "../pagination.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { withEtags } from "../etag.ts";
import { detachedDiskSchema, listOf, recordSchema, vmDiskSchema } from "../openapi/schemas.ts";

const NAME = z.string().regex(VOLUME_NAME, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});
const SIZE = z.number().int().min(2 ** 20, "at least 1 MiB").max(64 * 2 ** 40, "at most 64 TiB");

export const volumeSchema = z.object({
  name: NAME,
  pool: z.string().min(1).max(63),
  sizeBytes: SIZE,
  fromImage: z.string().min(1).max(253).nullable().default(null),
  node: z.string().min(1).max(253).nullable().default(null),
}).strict();

const resizeSchema = z.object({ sizeBytes: SIZE }).strict();
const attachSchema = z.object({ volume: z.string().min(1).max(63) }).strict();

export function volumeRoutes(node: ClusterNode, host: VmHost): Hono<Env> {
  const app = new Hono<Env>();
  const mustGet = (name: string): VolumeRecord => {
    const v = node.fsm.volumes.get(name);
    if (!v) throw new NotFoundError("volume", name);
    return v;
  };

  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => node.fsm.volumes.get(c.req.param("name") ?? ""));
  const getDoc = doc({
    summary: "List volumes",
    query: pageQuery,
    response: listOf("volumes", recordSchema),
  });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    return c.json(
      pagedList("volumes", node.fsm.volumes.all(), q, { list: "volumes", key: (v) => v.name }),
    );
  });
  app.get("/:name", doc({ summary: "Show a volume" }), (c) => c.json(mustGet(c.req.param("name"))));

  const postDoc = doc({
    summary: "Create a volume on the host that holds its pool",
    body: volumeSchema,
    status: 201,
  });
  app.post("/", postDoc, requireRole("operator"), async (c) => {
    const body = await parseBody(c, volumeSchema);
    // The state machine decides again when the volume is recorded; here nothing is made yet.
    const pool = node.fsm.volumes.check(body);
    const target = pool.driver === "shared-dir" ? node.id : pool.node ?? body.node!;
    if (node.fsm.volumes.get(body.name)) {
      throw new ConflictError(`name: volume "${body.name}" already exists`, { field: "name" });
    }
    node.fsm.pools.assertRoom(pool, target, body.sizeBytes, "size");
    return await onMember(c, node, target, body, async () => {
      const spec: VolumeSpec = { ...body };
      const backend = host.pools.backend(spec.pool);
      if (spec.fromImage) {
        const files = await host.cluster.pullImage(spec.fromImage);
        await backend.overlayOn(files.disk!, "qcow2", spec.name, spec.sizeBytes);
      } else {
        await backend.create(spec.name, spec.sizeBytes);
      }
      try {
        const record = await host.cluster.report({
          op: "volume.create",
          volume: spec,
          ...authorship(c),
        });
        return c.json(record as VolumeRecord, 201);
      } catch (err) {
        await backend.delete(spec.name).catch(() => {});
        throw err;
      }
    });
  });

  const postResizeDoc = doc({ summary: "Grow a volume", body: resizeSchema });
  app.post("/:name/resize", postResizeDoc, requireRole("operator"), async (c) => {
    const v = mustGet(c.req.param("name"));
    const { sizeBytes } = await parseBody(c, resizeSchema);
    const vm = v.attachedTo ? node.fsm.vm(v.attachedTo) : null;
    const target = vm?.node ?? v.node;
    if (sizeBytes > v.sizeBytes) {
      const pool = node.fsm.pools.get(v.pool)!;
      node.fsm.pools.assertRoom(
        pool,
        v.node ?? target ?? node.id,
        sizeBytes - v.sizeBytes,
        "size",
      );
    }
    if (sizeBytes < v.sizeBytes) {
      throw ValidationError.field("size", `cannot shrink ${v.name} below ${v.sizeBytes} bytes`);
    }
    return await onMember(c, node, target, { sizeBytes }, async () => {
      if (vm) await host.resizeAttached(vm.name, v.name, sizeBytes);
      else await host.pools.backend(v.pool).resize(v.name, sizeBytes);
      const record = await host.cluster.report({
        op: "volume.resize",
        name: v.name,
        sizeBytes,
        ...authorship(c),
      });
      return c.json(record as VolumeRecord);
    });
  });

  const deleteDoc = doc({ summary: "Delete a volume (409 while attached)" });
  app.delete("/:name", deleteDoc, requireRole("operator"), async (c) => {
    const v = mustGet(c.req.param("name"));
    return await onMember(c, node, v.node, {}, async () => {
      const out = await host.cluster.report({
        op: "volume.delete",
        name: v.name,
        ...authorship(c),
      });
      const backend = host.pools.backend(v.pool);
      if (await backend.has(v.name)) await backend.delete(v.name);
      return c.json(out);
    });
  });

  return app;
}

/** Mounted under `/api/v1/vms` behind its bearer authentication. */
export function vmDiskRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();

  const getDisksDoc = doc({
    summary: "List a VM's disks, its root disk first, each with whether its QEMU has it plugged",
    query: pageQuery,
    response: listOf("disks", vmDiskSchema),
  });
  app.get("/:name/disks", getDisksDoc, (c) => {
    const vm = node.fsm.vm(c.req.param("name"));
    if (!vm) throw new NotFoundError("vm", c.req.param("name"));
    const spec = { list: "disks", key: (d: { id: string }) => [d.id === "root" ? 0 : 1, d.id] };
    const disks = vm.disks.map((d) => ({ ...d, plugged: diskPlugged(vm, d) }));
    return c.json(pagedList("disks", disks, parseQuery(c, pageQuery), spec));
  });
  const postDisksDoc = doc({
    summary: "Attach a volume to a VM (hot-plugged when running; ?wait until it is)",
    body: attachSchema,
    query: plugQuery,
    response: vmDiskSchema,
    status: [201, 200, 202],
  });
  app.post("/:name/disks", postDisksDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const { wait } = parseQuery(c, plugQuery);
    const { volume } = await parseBody(c, attachSchema);
    const name = c.req.param("name");
    const disk = await node.propose({ op: "vm.disk.attach", name, volume, ...authorship(c) });
    const d = disk as VmDisk;
    return await plugAnswer(c, node, name, { disk: volume }, true, wait, 201, (vm) => ({
      ...d,
      plugged: vm ? diskPlugged(vm, d) : null,
    }));
  });
  const deleteDisksDoc = doc({
    summary: "Detach a volume from a VM, by name or disk id (?wait until its QEMU let go)",
    query: plugQuery,
    response: detachedDiskSchema,
    status: [200, 202],
  });
  app.delete(
    "/:name/disks/:disk",
    deleteDisksDoc,
    requireRole("operator"),
    leaderOnly(node),
    async (c) => {
      const { wait } = parseQuery(c, plugQuery);
      const name = c.req.param("name");
      const disk = await node.propose({
        op: "vm.disk.detach",
        name,
        disk: c.req.param("disk").slice(0, 64),
        ...authorship(c),
      }) as VmDisk;
      return await plugAnswer(c, node, name, { disk: disk.volume }, false, wait, 200, (vm) => ({
        detached: disk,
        plugged: vm ? diskPlugged(vm, disk) : null,
      }));
    },
  );
  return app;
}
