/** `novactl operation ...` and the shared "wait with progress" of long operations. */
import { Command } from "commander";
import { durationSeconds } from "./parse.ts";
import type { ApiClient } from "./client.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printFields, printTable, render } from "./output.ts";
import { NovaError } from "../core/errors/mod.ts";

export interface Operation {
  id: string;
  kind: string;
  target: string;
  state: string;
  progress: { phase?: string; percent?: number };
  result: Record<string, unknown> | null;
  error: string | null;
}

/** Long-polls an operation to its end, showing progress on a TTY; fails (exit 1) unless it succeeded. */
export async function waitForOperation(
  client: ApiClient,
  id: string,
  timeoutS: number,
): Promise<Operation> {
  const deadline = Date.now() + timeoutS * 1000;
  const tty = Deno.stderr.isTerminal();
  let op: Operation;
  for (;;) {
    op = await client.get<Operation>(`/api/v1/operations/${id}/wait?timeoutMs=1000`);
    if (tty && op.state === "running") {
      const p = op.progress;
      const line = `${op.kind} ${op.target}: ${p.phase ?? "starting"} ${p.percent ?? 0}%`;
      Deno.stderr.writeSync(new TextEncoder().encode(`\r${line.padEnd(60)}`));
    }
    if (op.state !== "running") break;
    if (Date.now() > deadline) {
      throw new NovaError("timeout", `operation ${id} still running after ${timeoutS} s`);
    }
  }
  if (tty) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
  if (op.state !== "succeeded") {
    throw new NovaError("conflict", `${op.kind} ${op.target} ${op.state}: ${op.error ?? ""}`, op);
  }
  return op;
}

/** Whether an answer is an operation record rather than a finished call's own answer. */
export function isOperation(answer: unknown): answer is Operation {
  const a = answer as Record<string, unknown> | null;
  return typeof a?.id === "string" && typeof a.kind === "string" &&
    typeof a.runner === "string" && typeof a.state === "string";
}

/**
 * A call that starts an operation, as commands with `--wait`/`--no-wait` and `--timeout`
 * (common.ts withWaitOptions) make it: waits for the operation unless `--no-wait` (then
 * prints `KIND ID started`), fails (exit 1) unless it succeeded, else prints `done()`.
 * `-o json|yaml` prints the operation record, one document either way. A call that answers
 * with its own result instead (done at once, as VM snapshots below cluster level 2 are)
 * prints `done()`, or that result with `-o`.
 */
export async function startOperation(
  client: ApiClient,
  opts: GlobalOpts & { wait: boolean; timeout: number },
  start: () => Promise<unknown>,
  done: () => void,
): Promise<void> {
  const answer = await start();
  if (!isOperation(answer)) return render(opts.output, answer, done);
  let op = answer;
  if (opts.wait) op = await waitForOperation(client, op.id, opts.timeout);
  render(opts.output, op, () => {
    if (!opts.wait) return console.log(`${op.kind} ${op.id} started`);
    done();
  });
}

export function operationCommand(): Command {
  const cmd = new Command("operation").alias("op").description(
    "long operations (migrations, drains, backups, snapshots, VM creates, starts, stops, restarts, deletes)",
  );
  withClientOptions(withListLimit(cmd.command("list").description("operations, newest first")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list("/api/v1/operations", "operations", opts.limit);
      render(
        opts.output,
        r,
        () => printTable(r.operations, ["id", "kind", "target", "state", "runner", "createdAt"]),
      );
    });
  withClientOptions(cmd.command("show").argument("<id>").description("one operation"))
    .action(async (id: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown>>(`/api/v1/operations/${id}`);
      render(opts.output, r, () => printFields(r));
    });
  withClientOptions(
    cmd.command("wait").argument("<id>").description("wait for an operation to finish")
      .option("--timeout <duration>", "give up after, e.g. 10m", durationSeconds, 600),
  ).action(async (id: string, opts: GlobalOpts & { timeout: number }) => {
    const r = await waitForOperation(clientOf(opts), id, opts.timeout);
    render(opts.output, r, () => printFields(r as unknown as Record<string, unknown>));
  });
  withClientOptions(cmd.command("abort").argument("<id>").description("abort a running operation"))
    .action(async (id: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).request("POST", `/api/v1/operations/${id}/abort`);
      render(opts.output, r, () => console.log(`abort requested for ${id}`));
    });
  return cmd;
}
