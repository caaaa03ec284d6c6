/** /api/v1/vms: create, list, show, start, stop, delete. */
import { Hono } from "hono";
import { z } from "zod";
import { type ClusterNode, createVm, setVmDesired } from "../../core/cluster/mod.ts";
import { NotFoundError } from "../../core/errors/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import type { Env } from "../context.ts";

const VM_NAME = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});

/** Mirrors the CLI flags of `vm create`. */
export const createVmSchema = z.object({
  name: VM_NAME,
  image: z.string().min(1),
  cpus: z.number().int().min(1).max(64).default(1),
  memoryMiB: z.number().int().min(16).max(1024 * 1024).default(256),
  node: z.string().min(1).optional(),
  ha: z.boolean().default(false),
  start: z.boolean().default(true),
  labels: z.record(z.string().max(253)).default({}),
}).strict();

export function vmRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node));

  app.get("/", (c) => c.json({ vms: node.fsm.vms() }));

  app.get("/:name", (c) => {
    const vm = node.fsm.vm(c.req.param("name"));
    if (!vm) throw new NotFoundError("vm", c.req.param("name"));
    return c.json(vm);
  });

  app.post("/", requireRole("operator"), leaderOnly(node), async (c) => {
    const req = await parseBody(c, createVmSchema);
    return c.json(await createVm(node, req, c.get("principal").name), 201);
  });

  app.post("/:name/start", requireRole("operator"), leaderOnly(node), async (c) => {
    return c.json(
      await setVmDesired(node, c.req.param("name"), "running", c.get("principal").name),
    );
  });

  app.post("/:name/stop", requireRole("operator"), leaderOnly(node), async (c) => {
    return c.json(
      await setVmDesired(node, c.req.param("name"), "stopped", c.get("principal").name),
    );
  });

  app.delete("/:name", requireRole("operator"), leaderOnly(node), async (c) => {
    const force = c.req.query("force") === "true";
    return c.json(
      await setVmDesired(node, c.req.param("name"), "deleted", c.get("principal").name, { force }),
    );
  });

  return app;
}
