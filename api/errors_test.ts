/**
 * The one place errors become HTTP answers: every class of core/errors/mod.ts
 * gets its status and the `{"error":{code,message,details}}` shape, and a
 * client reading the status alone maps it back to the same status.
 */
import { Hono } from "hono";
import { z } from "zod";
import { assert, assertEquals } from "../core/testing/assert.ts";
import {
  ApplyFailedError,
  codeOfHttpStatus,
  ConflictError,
  type ErrorCode,
  exitCodeOf,
  FeatureUnavailableError,
  ForbiddenError,
  httpStatusOf,
  NoQuorumError,
  NotFoundError,
  NotLeaderError,
  NovaError,
  OverloadedError,
  PayloadTooLargeError,
  PrunedError,
  TimeoutError,
  UnauthorizedError,
  UnavailableError,
  ValidationError,
} from "../core/errors/mod.ts";
import { errorResponse } from "./errors.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/** What the API answers when a route throws `err`. */
async function answerTo(err: unknown): Promise<{ res: Response; body: ErrorBody }> {
  const app = new Hono();
  app.get("/", () => {
    throw err;
  });
  app.onError((e, c) => errorResponse(c, e));
  const res = await app.request("/");
  return { res, body: await res.json() };
}

const zodError = z.object({ cpus: z.number().int(), name: z.string() }).safeParse({
  cpus: 1.5,
}).error;

const CASES: [string, unknown, number, string][] = [
  [
    "ValidationError",
    new ValidationError("bad", [{ field: "cpus", message: "x" }]),
    400,
    "validation",
  ],
  ["ValidationError.field", ValidationError.field("name", "too long"), 400, "validation"],
  ["zod's own error", zodError, 400, "validation"],
  ["usage", new NovaError("usage", "bad flag"), 400, "usage"],
  ["UnauthorizedError", new UnauthorizedError(), 401, "unauthorized"],
  ["ForbiddenError", new ForbiddenError("viewer"), 403, "forbidden"],
  ["NotFoundError", new NotFoundError("vm", "web"), 404, "not_found"],
  ["PrunedError", new PrunedError("pruned by retention"), 404, "not_found"],
  ["ConflictError", new ConflictError("exists"), 409, "conflict"],
  [
    "precondition_failed",
    new NovaError("precondition_failed", "stale"),
    409,
    "precondition_failed",
  ],
  ["removed", new NovaError("removed", "gone"), 410, "removed"],
  [
    "FeatureUnavailableError",
    new FeatureUnavailableError("needs cluster level 2"),
    409,
    "feature_unavailable",
  ],
  ["PayloadTooLargeError", new PayloadTooLargeError(1024), 413, "too_large"],
  ["NoQuorumError", new NoQuorumError(), 503, "no_quorum"],
  ["NotLeaderError", new NotLeaderError("n2"), 503, "not_leader"],
  ["UnavailableError", new UnavailableError("later"), 503, "unavailable"],
  ["OverloadedError", new OverloadedError("full"), 503, "unavailable"],
  ["TimeoutError", new TimeoutError("wait"), 504, "timeout"],
  ["internal", new NovaError("internal", "bug"), 500, "internal"],
  ["a plain Error", new Error("oops"), 500, "internal"],
  [
    "ApplyFailedError (never a NovaError)",
    new ApplyFailedError(7, new Error("disk")),
    500,
    "internal",
  ],
];

for (const [what, err, status, code] of CASES) {
  testWithTimeout({
    name: `${what} → ${status} ${code}, in the one error shape`,
    timeoutMs: 2 * MINUTE,
  }, async () => {
    const { res, body } = await answerTo(err);
    assertEquals(res.status, status);
    assertEquals(res.headers.get("content-type"), "application/json");
    assertEquals(Object.keys(body), ["error"]);
    const keys = Object.keys(body.error).filter((k) => k !== "details");
    assertEquals(keys, ["code", "message"]);
    assertEquals(body.error.code, code);
    assert(body.error.message.length > 0, "a message for people");
  });
}

testWithTimeout({
  name: "validation errors name every failing field in details.fields",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { body } = await answerTo(zodError);
  assertEquals(body.error.details, {
    fields: [
      { field: "cpus", message: "Expected integer, received float" },
      { field: "name", message: "Required" },
    ],
  });
  assert(/cpus: .*; name: Required/.test(body.error.message), body.error.message);
});

testWithTimeout({
  name:
    "not found names the kind and the name; an internal error's body has its message, never its stack",
  timeoutMs: 2 * MINUTE,
}, async () => {
  assertEquals((await answerTo(new NotFoundError("vm", "web"))).body.error.details, {
    kind: "vm",
    name: "web",
  });
  const plain = await answerTo(new Error("disk on fire"));
  assertEquals(plain.body.error, { code: "internal", message: "disk on fire" });
});

testWithTimeout({
  name: "unavailable errors that know when to retry send Retry-After, rounded up",
  timeoutMs: 2 * MINUTE,
}, async () => {
  assertEquals((await answerTo(new OverloadedError("full"))).res.headers.get("retry-after"), "1");
  const later = await answerTo(new UnavailableError("snapshot", 2.2));
  assertEquals(later.res.headers.get("retry-after"), "3");
  assertEquals((await answerTo(new NoQuorumError())).res.headers.get("retry-after"), null);
});

testWithTimeout({
  name: "a client reading only the status maps it back to a code of the same status",
  timeoutMs: 2 * MINUTE,
}, () => {
  const codes: ErrorCode[] = [
    "validation",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "removed",
    "too_large",
    "unavailable",
    "timeout",
    "internal",
  ];
  for (const code of codes) {
    assertEquals(codeOfHttpStatus(httpStatusOf(code)), code, code);
  }
  assertEquals(codeOfHttpStatus(418), "internal");
});

testWithTimeout({
  name: "CLI exit codes: 2 for bad usage, 1 for every other error",
  timeoutMs: 2 * MINUTE,
}, () => {
  for (const [, err, , code] of CASES) {
    const expected = code === "usage" ? 2 : 1;
    assertEquals(exitCodeOf(code as ErrorCode), expected, String(err));
  }
});
