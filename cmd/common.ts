/** Options every client command takes, and how they become an ApiClient. */
import { type Command, Option } from "commander";
import { ApiClient } from "./client.ts";
import type { Format } from "./output.ts";

/** Nodes serve HTTPS by default (plain HTTP only with --insecure-http). */
export const DEFAULT_SERVER = "https://127.0.0.1:7070";

export interface GlobalOpts {
  server: string;
  token?: string;
  /** The cluster CA certificate file (a node's DIR/ca.crt) to verify https servers with. */
  ca?: string;
  output: Format;
}

export function withClientOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--server <url>", "API server URL").env("NOVACTL_SERVER").default(
        DEFAULT_SERVER,
      ),
    )
    .addOption(new Option("--token <token>", "API token").env("NOVACTL_TOKEN"))
    .addOption(
      new Option("--ca <file>", "cluster CA certificate (a node's DATA_DIR/ca.crt)").env(
        "NOVACTL_CA",
      ),
    )
    .addOption(
      new Option("-o, --output <format>", "output format").choices(["json", "table"]).default(
        "table",
      ),
    );
}

export function clientOf(opts: GlobalOpts): ApiClient {
  return new ApiClient({ server: opts.server, token: opts.token, ca: opts.ca });
}
