/**
 * The single place where the project's errors (core/errors/) become Connect/gRPC status codes.
 * The REST layer answers an error as `{error: {code, message, details}}` (api/errors.ts); the
 * gRPC layer turns that code into a status, keeps the message, and passes a validation
 * error's fields on as the `novactl-error-fields` metadata (JSON) besides naming them in the
 * message.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ErrorCode } from "../../core/errors/mod.ts";

const CODES: Record<ErrorCode, Code> = {
  validation: Code.InvalidArgument,
  usage: Code.InvalidArgument,
  unauthorized: Code.Unauthenticated,
  forbidden: Code.PermissionDenied,
  not_found: Code.NotFound,
  // Refined by connectCodeOf: a name already taken is AlreadyExists.
  conflict: Code.FailedPrecondition,
  precondition_failed: Code.FailedPrecondition,
  // A command the cluster level does not allow yet (core/upgrade/): not until every member is upgraded.
  feature_unavailable: Code.FailedPrecondition,
  no_quorum: Code.Unavailable,
  not_leader: Code.Unavailable,
  unavailable: Code.Unavailable,
  timeout: Code.DeadlineExceeded,
  internal: Code.Internal,
  removed: Code.FailedPrecondition,
  too_large: Code.ResourceExhausted,
};

/** The Connect code of a NovaError code (an unknown one: Unknown). */
export function connectCodeOf(code: string, message = ""): Code {
  if (code === "conflict" && /already exists/.test(message)) return Code.AlreadyExists;
  return CODES[code as ErrorCode] ?? Code.Unknown;
}

/** Metadata key carrying a validation error's `[{field, message}]` as JSON. */
export const ERROR_FIELDS_METADATA = "novactl-error-fields";

/** The ConnectError for a REST error answer (`status` and its JSON body). */
export function connectErrorOf(status: number, body: unknown): ConnectError {
  const err = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } })
    ?.error;
  const code = typeof err?.code === "string" ? err.code : "internal";
  const message = typeof err?.message === "string" ? err.message : `HTTP ${status}`;
  const metadata = new Headers({ "novactl-error-code": code });
  const fields = (err?.details as { fields?: unknown } | undefined)?.fields;
  if (Array.isArray(fields)) metadata.set(ERROR_FIELDS_METADATA, JSON.stringify(fields));
  return new ConnectError(message, connectCodeOf(code, message), metadata);
}
