/**
 * /api/v1/vms/:name/nics: NIC hot-plug (core/fsm/vm_nics.ts).
 *
 * - `GET /` the VM's NICs, each with its `index`
 * - `POST /` `{network, ip?, mac?, securityGroups?}` (an entry of `vm create`'s `nics`) adds
 *   a NIC: 201 with the NIC as recorded (address and MAC decided). A running guest gets it
 *   hot-plugged by its host shortly after; a stopped one at its next start.
 * - `DELETE /:nic` removes the NIC `nic` names: its index (`1`) or its MAC.
 * - both take `?wait=SECONDS` (./hotplug_wait.ts): until the running QEMU has the NIC (or
 *   no longer has it); each NIC shows `plugged`, null while the VM does not run.
 *
 * Refusals name the field: `nic.network`, `nic.ip`, `nic.mac`, `nic.securityGroups`, `nic`.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import { nicIndex, type VmNic } from "../../core/fsm/mod.ts";
import { checkNicAddress } from "../../core/network/mod.ts";
import { SECURITY_GROUP_LIMITS } from "../../core/fsm/security_groups.ts";
import { requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import { authorship, type Env } from "../context.ts";
import { pagedList, pageQuery } from "../pagination.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { listOf, removedNicSchema, vmNicSchema } from "../openapi/schemas.ts";
import { nicPlugged } from "../../core/fsm/vm_devices.ts";
import { plugAnswer, plugQuery } from "./hotplug_wait.ts";

export const addNicSchema = z.object({
  network: z.string().min(1).max(63),
  ip: z.string().max(15).optional(),
  mac: z.string().max(17).optional(),
  securityGroups: z.array(z.string().max(63)).max(SECURITY_GROUP_LIMITS.groupsPerNic).optional(),
}).strict();

/** Mounted under `/api/v1/vms` behind its bearer authentication. */
export function vmNicRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();

  const getNicsDoc = doc({
    summary: "List a VM's NICs, each with its index, address check and whether it is plugged",
    query: pageQuery,
    response: listOf("nics", vmNicSchema),
  });
  app.get("/:name/nics", getNicsDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    const vm = node.fsm.vm(c.req.param("name"));
    if (!vm) throw new NotFoundError("vm", c.req.param("name"));
    const nics = ((vm.nics ?? []) as VmNic[]).map((n, i) => ({
      ...n,
      index: nicIndex(n, i),
      ...checkNicAddress(n, vm.guest),
      plugged: nicPlugged(vm, n.mac),
    }));
    return c.json(pagedList("nics", nics, q, { list: "nics", key: (n) => n.index }));
  });

  const postNicsDoc = doc({
    summary: "Add a NIC (hot-plugged into a running guest; ?wait until it is)",
    body: addNicSchema,
    query: plugQuery,
    response: vmNicSchema,
    status: [201, 200, 202],
  });
  app.post("/:name/nics", postNicsDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const { wait } = parseQuery(c, plugQuery);
    const req = await parseBody(c, addNicSchema);
    // The applier checks these too (it decides); here they fail before a log entry is spent.
    if (!node.fsm.network(req.network)) {
      throw ValidationError.field("nic.network", `network "${req.network}" not found`);
    }
    for (const g of req.securityGroups ?? []) {
      if (!node.fsm.securityGroups.get(g)) {
        throw ValidationError.field("nic.securityGroups", `security group "${g}" not found`);
      }
    }
    const name = c.req.param("name");
    const nic = await node.propose({ op: "vm.nic.add", name, nic: req, ...authorship(c) }) as VmNic;
    return await plugAnswer(c, node, name, { nic: nic.mac }, true, wait, 201, (vm) => ({
      ...nic,
      plugged: vm ? nicPlugged(vm, nic.mac) : null,
    }));
  });

  const deleteNicsDoc = doc({
    summary: "Remove a NIC, named by its index or MAC (?wait until the guest let go)",
    query: plugQuery,
    response: removedNicSchema,
    status: [200, 202],
  });
  app.delete(
    "/:name/nics/:nic",
    deleteNicsDoc,
    requireRole("operator"),
    leaderOnly(node),
    async (c) => {
      const { wait } = parseQuery(c, plugQuery);
      const name = c.req.param("name");
      const removed = await node.propose({
        op: "vm.nic.remove",
        name,
        nic: c.req.param("nic").slice(0, 64),
        ...authorship(c),
      }) as VmNic;
      return await plugAnswer(c, node, name, { nic: removed.mac }, false, wait, 200, (vm) => ({
        removed,
        plugged: vm ? nicPlugged(vm, removed.mac) : null,
      }));
    },
  );

  return app;
}
