/** `novactl remote trust`: pin a server's cluster CA explicitly (see trust.ts). */
import { Command, Option } from "commander";
import { DEFAULT_SERVER } from "./common.ts";
import { type Format, printFields, render } from "./output.ts";
import { processTrustDeps, trustRemote } from "./trust.ts";

/** The `remote` command tree (only `trust` for now; named remotes come with contexts). */
export function remoteCommand(): Command {
  const remote = new Command("remote").description("servers this CLI trusts");
  remote.command("trust")
    .description("pin the server's cluster CA (printing its SHA-256 fingerprint and the file)")
    .addOption(
      new Option("--server <url>", "API server URL").env("NOVACTL_SERVER").default(
        DEFAULT_SERVER,
      ),
    )
    .addOption(
      new Option("--ca-fingerprint <sha256>", "pin only if the CA has this SHA-256 fingerprint")
        .env("NOVACTL_CA_FINGERPRINT"),
    )
    .option("-y, --yes", "pin whatever CA the server presents, without asking")
    .addOption(
      new Option("-o, --output <format>", "output format").choices(["json", "table"]).default(
        "table",
      ),
    )
    .action(
      async (
        opts: { server: string; caFingerprint?: string; yes?: boolean; output: Format },
      ) => {
        const r = await trustRemote(opts, processTrustDeps);
        render(opts.output, r, () => {
          printFields({ server: r.server, fingerprint: r.fingerprint, file: r.file });
          if (r.alreadyPinned) console.log("(already pinned)");
        });
      },
    );
  return remote;
}
