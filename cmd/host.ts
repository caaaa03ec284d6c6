/** `novactl host ...`: helpers a node runs on its own host. */
import { Command } from "commander";
import { runWatchdog } from "../host/fencing/mod.ts";

export function hostCommand(): Command {
  const host = new Command("host").description("per-host helpers a node starts itself");
  host.command("watchdog")
    .description(
      "fencing watchdog: kills this host's HA VMs when the node stops renewing its lease",
    )
    .requiredOption("--data-dir <dir>", "the node's data dir (socket and pidfile live there)")
    .action(async (opts) => {
      await runWatchdog(opts.dataDir);
    });
  return host;
}
