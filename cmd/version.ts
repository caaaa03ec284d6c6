/**
 * `novactl version`: this client's version and the server's (`GET /api/v1/version`). As with
 * kubectl, an unreachable server still shows the client's version, then fails (exit 1) saying
 * why; `--client` asks no server.
 */
import { Command } from "commander";
import { VERSION } from "../core/version.ts";
import { NovaError, toNovaError } from "../core/errors/mod.ts";
import { clientOf, type GlobalOpts } from "./common.ts";
import { render } from "./output.ts";

interface ServerVersion {
  version: string;
  api: string;
  node: string;
  deno: string;
}

export function versionCommand(): Command {
  return new Command("version")
    .description("print the client's and the server's versions")
    .option("--client", "the client's version only (no server is asked)")
    .action(async (opts: GlobalOpts & { client?: boolean }) => {
      const client = { version: VERSION, api: "v1", deno: Deno.version.deno };
      let server: ServerVersion | null = null;
      let failure: NovaError | null = null;
      if (!opts.client) {
        try {
          server = await clientOf(opts).get<ServerVersion>("/api/v1/version");
        } catch (err) {
          failure = toNovaError(err);
        }
      }
      const result = opts.client
        ? { client }
        : failure
        ? { client, server: null, serverError: failure.message }
        : { client, server };
      render(opts.output, result, () => {
        console.log(`Client Version: ${VERSION}`);
        if (server) {
          console.log(`Server Version: ${server.version} (node ${server.node}, API ${server.api})`);
        }
      });
      if (failure) {
        throw new NovaError(failure.code, `server version unknown: ${failure.message}`);
      }
    });
}
