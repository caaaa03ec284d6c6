/**
 * The one error hierarchy of novactl. Core code throws these; the API maps
 * them to HTTP statuses and the CLI to exit codes in exactly one place each
 * (see {@link httpStatusOf} and {@link exitCodeOf}).
 */

export type ErrorCode =
  | "validation"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "precondition_failed"
  | "no_quorum"
  | "not_leader"
  | "unavailable"
  | "timeout"
  | "internal"
  | "usage"
  | "removed"
  | "too_large"
  | "feature_unavailable";

export class NovaError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "NovaError";
  }

  toJSON(): { error: { code: ErrorCode; message: string; details?: unknown } } {
    const body: { code: ErrorCode; message: string; details?: unknown } = {
      code: this.code,
      message: this.message,
    };
    if (this.details !== undefined) body.details = this.details;
    return { error: body };
  }
}

/** One failing input field and why. */
export interface FieldIssue {
  field: string;
  message: string;
}

export class ValidationError extends NovaError {
  constructor(message: string, readonly issues: FieldIssue[] = []) {
    super("validation", message, issues.length ? { fields: issues } : undefined);
  }

  static field(field: string, message: string): ValidationError {
    return new ValidationError(`${field}: ${message}`, [{ field, message }]);
  }
}

export class UnauthorizedError extends NovaError {
  constructor(message = "missing or invalid API token") {
    super("unauthorized", message);
  }
}

export class ForbiddenError extends NovaError {
  constructor(message: string) {
    super("forbidden", message);
  }
}

export class NotFoundError extends NovaError {
  constructor(kind: string, name: string) {
    super("not_found", `${kind} "${name}" not found`, { kind, name });
  }
}

/** The thing asked for existed once, but retention has removed it; the message says which limit. */
export class PrunedError extends NovaError {
  constructor(message: string, details?: unknown) {
    super("not_found", message, details);
  }
}

export class ConflictError extends NovaError {
  constructor(message: string, details?: unknown) {
    super("conflict", message, details);
  }
}

/** A request body beyond its cap: refused before it is read whole. */
export class PayloadTooLargeError extends NovaError {
  constructor(readonly limitBytes: number) {
    super("too_large", `request body is larger than ${limitBytes} bytes`, { limitBytes });
  }
}

export class NoQuorumError extends NovaError {
  constructor(message = "cluster has no quorum (no leader reachable); retry later") {
    super("no_quorum", message);
  }
}

/** Raised on a non-leader that cannot forward; carries the leader if known. */
export class NotLeaderError extends NovaError {
  constructor(readonly leader: string | null) {
    super("not_leader", leader ? `not the leader; leader is ${leader}` : "no leader elected");
  }
}

export class TimeoutError extends NovaError {
  constructor(what: string) {
    super("timeout", `timed out: ${what}`);
  }
}

export class UnavailableError extends NovaError {
  /** Seconds after which a retry may succeed; the API sends it as Retry-After. */
  readonly retryAfterSeconds?: number;

  constructor(message: string, retryAfterSeconds?: number) {
    super("unavailable", message);
    if (retryAfterSeconds !== undefined) this.retryAfterSeconds = retryAfterSeconds;
  }
}

/**
 * A capacity limit was reached (uncommitted bytes, a peer's send queue):
 * the request was refused before using more memory, and can be retried.
 */
export class OverloadedError extends UnavailableError {
  constructor(message: string, retryAfterSeconds = 1) {
    super(message, retryAfterSeconds);
  }
}

/**
 * This node's environment (SQLite, the disk, memory) failed while it applied a
 * committed entry. Unlike a rejection (a {@link NovaError} the command itself
 * earns, the same on every replica), other replicas applied the entry fine: a
 * node that recorded a different outcome and moved on would silently diverge,
 * so the node stops instead (fail-stop) and replays the entry after a restart.
 * Deliberately not a NovaError: nothing may turn it into an API answer.
 */
export class ApplyFailedError extends Error {
  constructor(readonly index: number, cause: unknown) {
    super(
      `applying entry ${index} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
    this.name = "ApplyFailedError";
  }
}

/**
 * A request's `If-Match` names another version of the resource (api/etag.ts): HTTP 412. The
 * other precondition_failed errors are states of a host or the cluster, answered 409.
 */
export class PreconditionFailedError extends NovaError {
  constructor(message: string, details?: unknown) {
    super("precondition_failed", message, details);
  }
}

/**
 * The request needs a cluster level the cluster does not run at yet (core/upgrade/): some
 * member still runs an older release. The details name the level and the members holding it.
 */
export class FeatureUnavailableError extends NovaError {
  constructor(message: string, details?: unknown) {
    super("feature_unavailable", message, details);
  }
}

const HTTP_STATUS: Record<ErrorCode, number> = {
  validation: 400,
  usage: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  precondition_failed: 409,
  no_quorum: 503,
  not_leader: 503,
  unavailable: 503,
  timeout: 504,
  internal: 500,
  removed: 410,
  too_large: 413,
  feature_unavailable: 409,
};

export function httpStatusOf(code: ErrorCode): number {
  return HTTP_STATUS[code] ?? 500;
}

/** The HTTP status an error is answered with. */
export function httpStatusOfError(err: NovaError): number {
  return err instanceof PreconditionFailedError ? 412 : httpStatusOf(err.code);
}

/** Reverse mapping for clients that receive an error body without a code. */
export function codeOfHttpStatus(status: number): ErrorCode {
  if (status === 400) return "validation";
  if (status === 401) return "unauthorized";
  if (status === 403) return "forbidden";
  if (status === 404) return "not_found";
  if (status === 409) return "conflict";
  if (status === 410) return "removed";
  if (status === 413) return "too_large";
  if (status === 503) return "unavailable";
  if (status === 504) return "timeout";
  return "internal";
}

/** CLI exit codes per the interface contract: 2 bad usage, 1 any other failure. */
export function exitCodeOf(code: ErrorCode): number {
  return code === "usage" ? 2 : 1;
}

/** The Retry-After seconds an error suggests, if any. */
export function retryAfterOf(err: NovaError): number | undefined {
  return err instanceof UnavailableError ? err.retryAfterSeconds : undefined;
}

export function toNovaError(err: unknown): NovaError {
  if (err instanceof NovaError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new NovaError("internal", message);
}
