/** Request body parsing with zod; failures name the field. */
import type { Context } from "hono";
import type { z } from "zod";
import { PayloadTooLargeError, ValidationError } from "../core/errors/mod.ts";
import { zodToValidationError } from "./errors.ts";
import { assertDeclared } from "./openapi/route_doc.ts";
import { DURATION_HINT, parseDuration as parseUnits } from "../core/units.ts";

/**
 * The largest JSON body the public API reads. Its biggest legitimate bodies
 * (a VM's cloud-init user-data, a whole config document) are kilobytes; the
 * cap keeps one request from holding a node's memory. Files go through the
 * streamed blob upload instead.
 */
export const MAX_JSON_BODY_BYTES = 1 << 20;

/** Bodies parsed by {@link readJson}, for the audit record's target (api/audit.ts). */
const parsedBodies = new WeakMap<Request, unknown>();

/** The JSON body a handler parsed from `req`; undefined when none did. */
export function parsedBodyOf(req: Request): unknown {
  return parsedBodies.get(req);
}

/** Parses a JSON body of at most `maxBytes` (413 beyond it); an empty body is `{}`. */
export async function readJson(c: Context, maxBytes = MAX_JSON_BODY_BYTES): Promise<unknown> {
  const text = await readCapped(c.req.raw, maxBytes);
  let value: unknown = {};
  if (text.trim() !== "") {
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw ValidationError.field("body", `malformed JSON (${(err as Error).message})`);
    }
  }
  parsedBodies.set(c.req.raw, value);
  return value;
}

/** The body as text, refused as soon as it (or its declared length) passes `maxBytes`. */
async function readCapped(req: Request, maxBytes: number): Promise<string> {
  const declared = req.headers.get("content-length");
  if (Number(declared ?? 0) > maxBytes) throw new PayloadTooLargeError(maxBytes);
  if (!req.body) return "";
  // A declared length bounds the body (HTTP framing): read it whole, natively, without the
  // stream reader a chunk loop needs (its release costs an exception object per request).
  if (declared !== null) return await req.text();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.byteLength;
    if (size > maxBytes) throw new PayloadTooLargeError(maxBytes);
    chunks.push(chunk);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.byteLength;
  }
  return new TextDecoder().decode(all);
}

/**
 * Parses the JSON body with `schema`, which must be the route's declared body schema
 * (api/openapi/route_doc.ts): the OpenAPI document shows what validates.
 */
export async function parseBody<T extends z.ZodTypeAny>(
  c: Context,
  schema: T,
): Promise<z.output<T>> {
  assertDeclared(c, "body", schema);
  const parsed = schema.safeParse(await readJson(c));
  if (!parsed.success) throw zodToValidationError(parsed.error);
  return parsed.data;
}

/** Parses an `If-Match` header holding a version number (quotes allowed). */
export function ifMatchVersion(c: Context): number | undefined {
  const raw = c.req.header("if-match");
  if (raw === undefined) return undefined;
  const v = Number(raw.replace(/^W\//, "").replaceAll('"', "").trim());
  if (!Number.isInteger(v) || v < 0) {
    throw ValidationError.field("If-Match", "must be a version number");
  }
  return v;
}

/** Parses a duration like 30s, 15m, 24h, 7d or plain seconds (core/units.ts, as the CLI does). */
export function parseDuration(text: string, field: string): number {
  const ms = parseUnits(text, "s");
  if (ms === undefined) throw ValidationError.field(field, `"${text}" is not ${DURATION_HINT}`);
  return ms;
}
