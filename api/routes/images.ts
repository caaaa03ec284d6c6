/** /api/v1/images and /api/v1/blobs: upload image files, record images, pull them onto hosts. */
import { Hono } from "hono";
import { z } from "zod";
import { type ClusterNode, createImage, deleteImage, pullImage } from "../../core/cluster/mod.ts";
import { NotFoundError, PayloadTooLargeError, ValidationError } from "../../core/errors/mod.ts";
import { BlobStore } from "../../host/storage/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { forwardTo, leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import type { Env } from "../context.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import {
  deletedSchema,
  imageListSchema,
  imageSchema as imageResponseSchema,
} from "../openapi/schemas.ts";
import { withEtags } from "../etag.ts";
import { pagedList, pageQuery } from "../pagination.ts";

const IMAGE_NAME = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, {
  message: "lowercase letters, digits, '.', '_' and '-' (1-63 chars)",
});
const blobRef = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
});

const imageSchema = z.object({
  name: IMAGE_NAME,
  kernel: blobRef.optional(),
  initrd: blobRef.optional(),
  cmdline: z.string().max(4096).optional(),
  disk: blobRef.extend({ virtualBytes: z.number().int().positive() }).optional(),
  source: z.string().min(1),
}).strict();

const uploadQuery = z.object({
  format: z.enum(["raw", "qcow2"]).optional().describe("qcow2: checked as a disk image"),
});
const pullQuery = z.object({
  node: z.string().optional().describe("the host to stage it on (default: the node answering)"),
});

export function blobRoutes(node: ClusterNode, blobs: BlobStore): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node));

  // Uploads land on the node that receives them; the image record names it as a source.
  // Streams to disk: refused (413, partial file deleted) past images.maxUploadBytes; a qcow2
  // naming other host files (backing or data file) is refused (400) before it is kept.
  const putDoc = doc({
    summary: "Upload a file (kernel, initrd, disk) by its SHA-256",
    rawBody: "application/octet-stream",
    query: uploadQuery,
    status: 201,
  });
  app.put("/:sha256", putDoc, requireRole("operator"), async (c) => {
    const body = c.req.raw.body;
    if (!body) throw ValidationError.field("body", "the file content is missing");
    const maxBytes = node.fsm.settings()["images.maxUploadBytes"];
    if (Number(c.req.header("content-length") ?? 0) > maxBytes) {
      throw new PayloadTooLargeError(maxBytes);
    }
    const disk = parseQuery(c, uploadQuery).format === "qcow2";
    let virtualBytes: number | undefined;
    const info = await blobs.put(body, c.req.param("sha256"), {
      maxBytes,
      check: async (tmp) => void (virtualBytes = await BlobStore.checkUpload(tmp, disk)),
    });
    if (!disk) return c.json({ ...info, node: node.id }, 201);
    return c.json({ ...info, node: node.id, virtualBytes }, 201);
  });

  return app;
}

export function imageRoutes(node: ClusterNode, blobs: BlobStore): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => node.fsm.image(c.req.param("name") ?? ""));

  const getDoc = doc({ summary: "List images", query: pageQuery, response: imageListSchema });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    return c.json(
      pagedList("images", node.fsm.images(), q, { list: "images", key: (i) => i.name }),
    );
  });

  app.get("/:name", doc({ summary: "Show an image", response: imageResponseSchema }), (c) => {
    const image = node.fsm.image(c.req.param("name"));
    if (!image) throw new NotFoundError("image", c.req.param("name"));
    return c.json(image);
  });

  const postDoc = doc({
    summary: "Record an image from uploaded files",
    body: imageSchema,
    response: imageResponseSchema,
    status: 201,
  });
  app.post("/", postDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const body = await parseBody(c, imageSchema);
    const record = await createImage(node, {
      name: body.name,
      kind: body.disk ? "disk" : "kernel",
      kernel: body.kernel,
      initrd: body.initrd,
      cmdline: body.cmdline,
      disk: body.disk,
      sources: [body.source],
    }, c.get("principal").name);
    return c.json(record, 201);
  });

  const deleteDoc = doc({ summary: "Delete an image", response: deletedSchema });
  app.delete("/:name", deleteDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    await deleteImage(node, c.req.param("name"));
    return c.json({ deleted: c.req.param("name") });
  });

  // Pre-stage an image on a host (default: the node answering). Runs on that host.
  const postPullDoc = doc({ summary: "Stage an image's files on a host", query: pullQuery });
  app.post("/:name/pull", postPullDoc, requireRole("operator"), async (c) => {
    const target = parseQuery(c, pullQuery).node ?? node.id;
    if (target !== node.id) {
      const m = node.fsm.member(target);
      if (!m) throw new NotFoundError("node", target);
      return await forwardTo(c, m.url, node.id);
    }
    const files = await pullImage(node, blobs, c.req.param("name"));
    return c.json({ node: node.id, image: c.req.param("name"), files });
  });

  return app;
}
