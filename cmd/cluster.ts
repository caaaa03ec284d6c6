/** `novactl cluster ...`: status, join tokens, remove, transfer-leader, backup, recover. */
import { Command } from "commander";
import { durationText } from "./parse.ts";
import { type Operation, waitForOperation } from "./operation.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
  withWaitOptions,
} from "./common.ts";
import { printFields, printTable, render } from "./output.ts";
import type { ClusterStatus } from "../core/cluster/mod.ts";
import { addRecoveryCommands } from "./cluster_recover.ts";

export function clusterCommand(): Command {
  const cluster = new Command("cluster").description("cluster membership and status");

  withClientOptions(
    cluster.command("status").description("show leader, term, commit index and members"),
  )
    .action(async (opts: GlobalOpts) => {
      const s = await clientOf(opts).get<ClusterStatus & { caFingerprint?: string }>(
        "/api/v1/cluster",
      );
      render(opts.output, s, () => {
        printFields({
          cluster: s.clusterId,
          level: s.level,
          leader: s.leader,
          term: s.term,
          commit: s.commitIndex,
          "ca-fingerprint": s.caFingerprint,
        });
        console.log();
        printTable(s.members as unknown as Record<string, unknown>[], [
          "name",
          "url",
          "role",
          "state",
          "version",
        ]);
      });
    });

  const token = cluster.command("token").description("join tokens");
  withClientOptions(
    token.command("create").description(
      "create a single-use join token (printed alone on the last line)",
    )
      .option("--ttl <duration>", "lifetime, e.g. 30m, 24h", durationText, "1h"),
  ).action(async (opts: GlobalOpts & { ttl: string }) => {
    const r = await clientOf(opts).request<{ token: string; expiresAt: string }>(
      "POST",
      "/api/v1/cluster/tokens",
      { ttl: opts.ttl },
    );
    render(opts.output, r, () => {
      console.log(`# expires ${r.expiresAt}; use: novactl node start --join URL --token TOKEN`);
      console.log(r.token);
    });
  });
  withClientOptions(
    withListLimit(token.command("list").description("list join tokens (ids are hash prefixes)")),
  ).action(async (opts: ListOpts) => {
    const r = await clientOf(opts).list("/api/v1/cluster/tokens", "tokens", opts.limit);
    render(
      opts.output,
      r,
      () => printTable(r.tokens, ["id", "createdAt", "expiresAt", "usedBy"]),
    );
  });

  withClientOptions(cluster.command("remove").argument("<name>").description("remove a member"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).request(
        "DELETE",
        `/api/v1/cluster/members/${encodeURIComponent(name)}`,
      );
      render(opts.output, r, () => console.log(`removed ${name}`));
    });

  withClientOptions(
    cluster.command("transfer-leader").argument("<name>").description(
      "hand Raft leadership to a voter",
    ),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("POST", "/api/v1/cluster/transfer-leader", { name });
    render(opts.output, r, () => console.log(`leader is now ${name}`));
  });

  withClientOptions(withWaitOptions(
    cluster.command("rebalance").description("even out host load with live migrations")
      .option("--dry-run", "print the plan only"),
    { byDefault: true, timeoutSeconds: 3600, until: "the rebalance is done" },
  )).action(async (opts: GlobalOpts & { dryRun?: boolean; wait: boolean; timeout: number }) => {
    const client = clientOf(opts);
    const q = opts.dryRun ? "?dryRun=true" : "";
    const r = await client.request<
      {
        moves: { vm: string; from: string; to: string }[];
        imbalanceBefore: number;
        imbalanceAfter: number;
        operation?: Operation | null;
      }
    >("POST", `/api/v1/cluster/rebalance${q}`);
    if (!opts.dryRun && opts.wait && r.operation) {
      r.operation = await waitForOperation(client, r.operation.id, opts.timeout);
    }
    render(opts.output, r, () => {
      console.log(
        `imbalance ${r.imbalanceBefore} → ${r.imbalanceAfter} with ${r.moves.length} move(s)`,
      );
      printTable(r.moves, ["vm", "from", "to"]);
    });
  });

  addRecoveryCommands(cluster);
  return cluster;
}
