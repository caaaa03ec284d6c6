/** The novactl command line: a thin client of the REST API, plus `node start`. */
import { groupCommand } from "./group.ts";
import { networkCommand } from "./network.ts";
import { sgCommand } from "./sg.ts";
import { fipCommand, routerCommand } from "./router.ts";
import { poolCommand } from "./pool.ts";
import { volumeCommand } from "./volume.ts";
import { backupCommand } from "./backup.ts";
import { alertCommand } from "./alert.ts";
import { operationCommand } from "./operation.ts";
import { Command, CommanderError } from "commander";
import { exitCodeOf, type NovaError, toNovaError } from "../core/errors/mod.ts";
import { VERSION } from "../core/version.ts";
import { nodeCommand } from "./node.ts";
import { hostCommand } from "./host.ts";
import { clusterCommand } from "./cluster.ts";
import { configCommand } from "./config.ts";
import { imageCommand } from "./image.ts";
import { vmCommand } from "./vm.ts";
import { auditCommand } from "./audit.ts";
import { eventsCommand } from "./events.ts";
import { topCommand } from "./stats.ts";
import { tokenCommand } from "./token.ts";
import { remoteCommand } from "./remote.ts";
import { contextCommand } from "./context.ts";
import { versionCommand } from "./version.ts";
import { completeCommand, completionCommand } from "./completion.ts";
import { applyGlobalOptions, globalOptions } from "./common.ts";
import { addExamples } from "./examples.ts";

export function buildProgram(): Command {
  const program = new Command("novactl")
    .description("clustered virtual-machine manager")
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  // Global flags are the root's options; commander reads a parent's options anywhere on the line
  // (positional options stay off), so they stand before or after the subcommand alike.
  for (const o of globalOptions()) program.addOption(o);
  program.hook("preAction", (root, action) => applyGlobalOptions(root, action));
  program.addCommand(nodeCommand());
  program.addCommand(clusterCommand());
  program.addCommand(configCommand());
  program.addCommand(imageCommand());
  program.addCommand(vmCommand());
  program.addCommand(groupCommand());
  program.addCommand(networkCommand());
  program.addCommand(sgCommand());
  program.addCommand(routerCommand());
  program.addCommand(poolCommand());
  program.addCommand(volumeCommand());
  program.addCommand(backupCommand());
  program.addCommand(fipCommand());
  program.addCommand(operationCommand());
  program.addCommand(hostCommand());
  program.addCommand(auditCommand());
  program.addCommand(eventsCommand());
  program.addCommand(topCommand());
  program.addCommand(alertCommand());
  program.addCommand(tokenCommand());
  program.addCommand(remoteCommand());
  program.addCommand(contextCommand());
  program.addCommand(versionCommand());
  program.addCommand(completionCommand(program));
  program.addCommand(completeCommand(), { hidden: true });
  // Usage errors in subcommands must exit 2 as well: let them throw to us. Every command's
  // --help lists the global flags and shows an example.
  const override = (cmd: Command) => {
    cmd.exitOverride();
    cmd.showHelpAfterError("(run with --help for usage)");
    cmd.configureHelp({ showGlobalOptions: true });
    cmd.commands.forEach(override);
  };
  override(program);
  addExamples(program);
  return program;
}

/** Runs the CLI and returns the process exit code. */
export async function runCli(args: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(args, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === "commander.helpDisplayed" || err.code === "commander.version" ||
        err.exitCode === 0
      ) {
        return 0;
      }
      return 2; // commander already printed the usage error
    }
    const nova = toNovaError(err);
    console.error(`error: ${nova.message}${detailsSuffix(nova)}`);
    return exitCodeOf(nova.code);
  }
}

function detailsSuffix(err: NovaError): string {
  const fields = (err.details as { fields?: { field: string; message: string }[] } | undefined)
    ?.fields;
  if (!fields?.length || fields.length === 1) return "";
  return ` (${fields.map((f) => f.field).join(", ")})`;
}
