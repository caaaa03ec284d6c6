/** The single place where errors become HTTP responses. */
import type { Context } from "hono";
import { ZodError } from "zod";
import {
  httpStatusOfError,
  NovaError,
  retryAfterOf,
  toNovaError,
  ValidationError,
} from "../core/errors/mod.ts";
import { log } from "../core/log/mod.ts";

export function zodToValidationError(err: ZodError, prefix = ""): ValidationError {
  const issues = err.issues.map((i) => ({
    field: prefix + (i.path.length ? i.path.join(".") : "body"),
    message: i.message,
  }));
  return new ValidationError(issues.map((i) => `${i.field}: ${i.message}`).join("; "), issues);
}

export function errorResponse(c: Context, err: unknown): Response {
  const nova = err instanceof ZodError ? zodToValidationError(err) : toNovaError(err);
  const status = httpStatusOfError(nova);
  if (status >= 500 && nova.code === "internal") {
    log.error("request failed", {
      path: c.req.path,
      error: nova.message,
      stack: (err as Error)?.stack,
    });
  }
  const retryAfter = retryAfterOf(nova);
  if (retryAfter !== undefined) c.header("Retry-After", String(Math.ceil(retryAfter)));
  return c.json(nova.toJSON(), status as 400);
}

export function isNovaError(err: unknown): err is NovaError {
  return err instanceof NovaError;
}
