/** `novactl audit list`: the replicated audit log (admin tokens only). */
import { Command } from "commander";
import { positiveInt } from "./parse.ts";
import { clientOf, type GlobalOpts, withClientOptions } from "./common.ts";
import { printTable, render } from "./output.ts";
import { parseSince } from "../api/routes/audit.ts";
import type { AuditEntry } from "../core/fsm/mod.ts";
import { NovaError } from "../core/errors/mod.ts";

/** `--since` as epoch ms; a value it cannot read is bad usage (exit 2). */
function sinceOf(since: string): number {
  try {
    return parseSince(since, Date.now());
  } catch (err) {
    throw new NovaError("usage", `--since: ${(err as Error).message.replace(/^since: /, "")}`);
  }
}

export function auditCommand(): Command {
  const cmd = new Command("audit").description("the audit log of requests and cluster actions");
  withClientOptions(
    cmd.command("list").description("audit records, newest first")
      .option("--since <when>", "only newer: an age (90s, 15m, 1h, 7d) or an ISO time")
      .option("--principal <name>", "only this principal (token name, system:ha, anonymous)")
      .option("--resource <kind/name>", "only this target (vm/web1), or a kind (vm)")
      .option("--limit <n>", "at most this many (fetched page by page)", positiveInt, 100),
  ).action(
    async (
      opts: GlobalOpts & { since?: string; principal?: string; resource?: string; limit: number },
    ) => {
      const q = new URLSearchParams();
      // An age counts back from this machine's clock: the user's "last hour".
      if (opts.since) q.set("since", new Date(sinceOf(opts.since)).toISOString());
      if (opts.principal) q.set("principal", opts.principal);
      if (opts.resource) q.set("resource", opts.resource);
      const r = await clientOf(opts).list<"entries", AuditEntry>(
        `/api/v1/audit?${q}`,
        "entries",
        opts.limit,
      );
      render(opts.output, r, () =>
        printTable(
          r.entries.map((e) => ({
            time: new Date(e.at).toISOString(),
            principal: e.principal,
            source: e.source,
            method: e.method,
            target: e.method === "SYSTEM"
              ? `${e.route} ${e.resource ?? ""}`.trim()
              : `${e.route}${e.resource ? ` (${e.resource})` : ""}`,
            code: e.code,
            ms: e.ms,
          })),
          ["time", "principal", "source", "method", "target", "code", "ms"],
        ));
    },
  );
  return cmd;
}
