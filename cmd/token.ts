/** `novactl token ...`: API tokens with roles and expiry, a thin client of /api/v1/tokens. */
import { Command, Option } from "commander";
import { durationText } from "./parse.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printTable, render } from "./output.ts";

interface IssuedToken {
  name: string;
  role: string;
  expiresAt: string | null;
  token: string;
}

const path = (name: string) => `/api/v1/tokens/${encodeURIComponent(name)}`;

/** Prints an issued token for people: a comment, then the secret alone on the last line. */
function printIssued(r: IssuedToken, what: string): void {
  console.log(
    `# ${what} token ${r.name} (role ${r.role}, ${
      r.expiresAt ? `expires ${r.expiresAt}` : "never expires"
    }); it is shown only once`,
  );
  console.log(r.token);
}

export function tokenCommand(): Command {
  const token = new Command("token").description("API tokens (roles: viewer, operator, admin)");
  withClientOptions(
    token.command("create").argument("<name>").description(
      "create an API token (the secret is printed alone on the last line)",
    )
      .addOption(
        new Option("--role <role>", "what the token may do").choices([
          "viewer",
          "operator",
          "admin",
        ])
          .makeOptionMandatory(),
      )
      .option(
        "--ttl <duration>",
        "lifetime, e.g. 90s, 12h, 30d (default: never expires)",
        durationText,
      ),
  ).action(async (name: string, opts: GlobalOpts & { role: string; ttl?: string }) => {
    const r = await clientOf(opts).request<IssuedToken>("POST", "/api/v1/tokens", {
      name,
      role: opts.role,
      ...(opts.ttl === undefined ? {} : { ttl: opts.ttl }),
    });
    render(opts.output, r, () => printIssued(r, "created"));
  });
  withClientOptions(
    withListLimit(token.command("list").description("list API tokens (never their secrets)")),
  ).action(async (opts: ListOpts) => {
    const r = await clientOf(opts).list("/api/v1/tokens", "tokens", opts.limit);
    render(
      opts.output,
      r,
      () => printTable(r.tokens, ["name", "role", "createdAt", "expiresAt", "expired"]),
    );
  });
  withClientOptions(
    token.command("revoke").argument("<name>").description("revoke an API token at once"),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("DELETE", path(name));
    render(opts.output, r, () => console.log(`token ${name} revoked`));
  });
  withClientOptions(
    token.command("rotate").argument("<name>").description(
      "issue a new secret for a token (same name and role); the old secret stops working",
    ).option(
      "--ttl <duration>",
      "new lifetime (default: keep the current expiry)",
      durationText,
    ),
  ).action(async (name: string, opts: GlobalOpts & { ttl?: string }) => {
    const r = await clientOf(opts).request<IssuedToken>(
      "POST",
      `${path(name)}/rotate`,
      opts.ttl === undefined ? {} : { ttl: opts.ttl },
    );
    render(opts.output, r, () => printIssued(r, "rotated"));
  });
  return token;
}
