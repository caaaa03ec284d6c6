/**
 * `novactl cluster backup FILE` (a thin client of `POST /api/v1/cluster/backup`)
 * and `novactl cluster recover --force-new-cluster` (an offline rewrite of a
 * stopped node's data dir, core/recovery/). See the README's "Disaster recovery".
 */
import type { Command } from "commander";
import { dirname } from "node:path";
import { clientOf, type GlobalOpts, withClientOptions } from "./common.ts";
import { type Format, printFields, render } from "./output.ts";
import { NovaError } from "../core/errors/mod.ts";
import { fsyncDir, tempPathFor, writeAll } from "../core/store/mod.ts";
import { forceNewCluster, readBackup } from "../core/recovery/mod.ts";
import { retireCentralMember } from "../host/ovs/mod.ts";

/** Adds `backup` and `recover` to the `cluster` command. */
export function addRecoveryCommands(cluster: Command): void {
  withClientOptions(
    cluster.command("backup").argument("<file>", "where to write the backup (0600)")
      .description(
        "write a consistent snapshot of the replicated state, with its metadata, to FILE",
      ),
  ).action(async (file: string, opts: GlobalOpts) => {
    const t0 = performance.now();
    const res = await clientOf(opts).stream("/api/v1/cluster/backup", "POST");
    const tmp = tempPathFor(file);
    try {
      const out = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
      try {
        for await (const chunk of res.body!) await writeAll(out, chunk);
        await out.sync();
      } finally {
        out.close();
      }
      // What arrived is checked as a restore would check it, before it takes the name.
      const header = await readBackup(tmp).catch((err: NovaError) => {
        throw new NovaError("unavailable", `the backup received is unusable: ${err.message}`);
      });
      await Deno.rename(tmp, file);
      await fsyncDir(dirname(file));
      const size = (await Deno.stat(file)).size;
      const ms = Math.round(performance.now() - t0);
      render(opts.output, { file, size, ms, ...header }, () =>
        printFields({
          file,
          cluster: header.clusterId,
          index: header.index,
          term: header.term,
          members: header.members.map((m) => `${m.name} (${m.role})`).join(", "),
          created: header.createdAt,
          version: header.version,
          bytes: size,
          sha256: header.sha256,
          ms,
        }));
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
  });

  cluster.command("recover")
    .description(
      "OFFLINE, on a stopped node: make it the only voter of its cluster, keeping its state " +
        "(after losing quorum for good; see the README's Disaster recovery)",
    )
    .requiredOption("--data-dir <dir>", "the stopped node's data dir")
    .option(
      "--force-new-cluster",
      "required: remove every other member from the configuration",
    )
    .action(async (opts: { dataDir: string; forceNewCluster?: boolean; output: Format }) => {
      if (!opts.forceNewCluster) {
        throw new NovaError(
          "usage",
          "cluster recover rewrites the node's Raft membership so that it alone votes, and " +
            "removes every other member for good; pass --force-new-cluster to do so",
        );
      }
      const report = await forceNewCluster(opts.dataDir);
      // The embedded OVN central's own Raft counts the lost voters too: start it anew.
      const ovnMovedTo = await retireCentralMember(opts.dataDir, Date.now());
      const r = { ...report, ovnMovedTo };
      render(opts.output, r, () =>
        printFields({
          node: r.node,
          cluster: r.clusterId,
          removed: r.removed.join(", ") || "-",
          "applied before": r.before.applied,
          "commit before": r.before.commit,
          "last index before": r.before.lastIndex,
          "applied now (committed)": r.appliedNow.committed,
          "applied now (not known committed)": r.appliedNow.uncommitted,
          "new index": r.index,
          "new term": r.term,
          vms: r.vms,
          "admin token": `${r.adminToken.name} (secret in ${r.adminToken.file})`,
          ms: r.ms,
          "old OVN central": r.ovnMovedTo ?? "-",
          next: `novactl node start --name ${r.node} --data-dir ${opts.dataDir} ...`,
        }));
    });
}
