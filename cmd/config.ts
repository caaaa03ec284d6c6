/** `novactl config ...`: get, set, history, rollback of the versioned cluster configuration. */
import { Command, InvalidArgumentError } from "commander";
import { clientOf, type GlobalOpts, withClientOptions } from "./common.ts";
import { printFields, printTable, render } from "./output.ts";
import { type ConfigRetention, type ConfigVersion, describeRetention } from "../core/fsm/mod.ts";

function versionArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

function ifMatch(v?: number): Record<string, string> {
  return v === undefined ? {} : { "if-match": String(v) };
}

export function configCommand(): Command {
  const config = new Command("config").description("versioned cluster configuration");

  withClientOptions(
    config.command("get").argument("[key]").description("show the configuration or one key"),
  )
    .action(async (key: string | undefined, opts: GlobalOpts) => {
      const api = clientOf(opts);
      if (key) {
        const r = await api.get<{ key: string; value: unknown; version: number }>(
          `/api/v1/config/${encodeURIComponent(key)}`,
        );
        render(
          opts.output,
          r,
          () => console.log(typeof r.value === "string" ? r.value : JSON.stringify(r.value)),
        );
        return;
      }
      const cv = await api.get<ConfigVersion>("/api/v1/config");
      render(opts.output, cv, () => {
        console.log(`# version ${cv.version} by ${cv.author} at ${cv.createdAt}`);
        printFields(cv.config as unknown as Record<string, unknown>);
      });
    });

  withClientOptions(
    config.command("set").argument("<key>").argument("<value>").description(
      "set one key (a new version)",
    )
      .option(
        "--if-match <version>",
        "fail with a conflict unless the current version is this",
        versionArg,
      ),
  ).action(async (key: string, value: string, opts: GlobalOpts & { ifMatch?: number }) => {
    const r = await clientOf(opts).request<{ version: number }>(
      "PUT",
      `/api/v1/config/${encodeURIComponent(key)}`,
      { value },
      ifMatch(opts.ifMatch),
    );
    render(opts.output, r, () => console.log(`${key} set; configuration version ${r.version}`));
  });

  withClientOptions(
    config.command("history").description("list configuration versions, newest first")
      .option("--limit <n>", "how many versions", "50"),
  ).action(async (opts: GlobalOpts & { limit: string }) => {
    const r = await clientOf(opts).get<
      { versions: ConfigVersion[]; retention?: ConfigRetention }
    >(
      `/api/v1/config/history?limit=${encodeURIComponent(opts.limit)}`,
    );
    render(opts.output, r, () => {
      printTable(r.versions as unknown as Record<string, unknown>[], [
        "version",
        "createdAt",
        "author",
        "action",
      ]);
      if (r.retention) console.log(`kept: ${describeRetention(r.retention)}`);
    });
  });

  withClientOptions(
    config.command("rollback").argument("<version>", "version to restore", versionArg)
      .description("create a new version equal to an old one")
      .option(
        "--if-match <version>",
        "fail with a conflict unless the current version is this",
        versionArg,
      ),
  ).action(async (version: number, opts: GlobalOpts & { ifMatch?: number }) => {
    const r = await clientOf(opts).request<ConfigVersion>(
      "POST",
      "/api/v1/config/rollback",
      { version },
      ifMatch(opts.ifMatch),
    );
    render(
      opts.output,
      r,
      () => console.log(`rolled back to version ${version}; now version ${r.version}`),
    );
  });

  return config;
}
