/** Options every client command takes, and how they become an ApiClient. */
import { type Command, InvalidArgumentError, Option } from "commander";
import { ApiClient } from "./client.ts";
import { processTrustDeps } from "./trust.ts";
import type { Format } from "./output.ts";

/** Nodes serve HTTPS by default (plain HTTP only with --insecure-http). */
export const DEFAULT_SERVER = "https://127.0.0.1:7070";

export interface GlobalOpts {
  server: string;
  token?: string;
  /** The cluster CA certificate file (a node's DIR/ca.crt) to verify https servers with. */
  ca?: string;
  /** The SHA-256 of the cluster CA to pin on first use, instead of asking (see trust.ts). */
  caFingerprint?: string;
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
      new Option(
        "--ca-fingerprint <sha256>",
        "pin the server's cluster CA on first use if its SHA-256 fingerprint is this",
      ).env("NOVACTL_CA_FINGERPRINT"),
    )
    .addOption(
      new Option("-o, --output <format>", "output format").choices(["json", "table"]).default(
        "table",
      ),
    );
}

/**
 * The API client for a command's options. Without `--ca`, an https server is verified with the
 * CA pinned for it, pinned on first use after a confirmation (see trust.ts).
 */
export function clientOf(opts: GlobalOpts): ApiClient {
  return new ApiClient({
    server: opts.server,
    token: opts.token,
    ca: opts.ca,
    caFingerprint: opts.caFingerprint,
    trust: processTrustDeps,
  });
}

/** A commander parser for flags that take a positive integer. */
export function positiveInt(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}
