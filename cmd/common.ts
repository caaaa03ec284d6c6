/** Options every client command takes, and how they become an ApiClient. */
import { type Command, Option } from "commander";
import { ApiClient } from "./client.ts";
import type { Format } from "./output.ts";

export interface GlobalOpts {
  server: string;
  token?: string;
  output: Format;
}

export function withClientOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--server <url>", "API server URL").env("NOVACTL_SERVER").default(
        "http://127.0.0.1:7070",
      ),
    )
    .addOption(new Option("--token <token>", "API token").env("NOVACTL_TOKEN"))
    .addOption(
      new Option("-o, --output <format>", "output format").choices(["json", "table"]).default(
        "table",
      ),
    );
}

export function clientOf(opts: GlobalOpts): ApiClient {
  return new ApiClient({ server: opts.server, token: opts.token });
}
