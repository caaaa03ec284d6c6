/** `novactl remote trust`: pin a server's cluster CA explicitly (see trust.ts). */
import { Command } from "commander";
import { type GlobalOpts, targetOfOpts } from "./common.ts";
import { printFields, render } from "./output.ts";
import { processTrustDeps, trustRemote } from "./trust.ts";

/** The `remote` command tree (named clusters are contexts: see context.ts). */
export function remoteCommand(): Command {
  const remote = new Command("remote").description("servers this CLI trusts");
  remote.command("trust")
    .description(
      "pin the cluster CA of --server (or the context's server), printing its SHA-256 fingerprint",
    )
    .option("-y, --yes", "pin whatever CA the server presents, without asking")
    .action(
      async (opts: GlobalOpts & { yes?: boolean }) => {
        const r = await trustRemote(
          { ...opts, server: targetOfOpts(opts).server },
          processTrustDeps,
        );
        render(opts.output, r, () => {
          printFields({ server: r.server, fingerprint: r.fingerprint, file: r.file });
          if (r.alreadyPinned) console.log("(already pinned)");
        });
      },
    );
  return remote;
}
