/** `novactl context ...`: named clusters to switch between (stored by contexts.ts). */
import { Command } from "commander";
import { NovaError } from "../core/errors/mod.ts";
import { type GlobalOpts, withClientOptions } from "./common.ts";
import { absolute, configPath, findContext, loadConfig, saveConfig } from "./contexts.ts";
import { printTable, render } from "./output.ts";

/** The value of a global flag only if it was typed on this command line, not taken from env. */
function typedGlobal(opts: GlobalOpts, key: "server" | "ca"): string | undefined {
  const typed = (opts as { typedGlobals?: string[] }).typedGlobals ?? [];
  return typed.includes(key) ? opts[key] : undefined;
}

export function contextCommand(): Command {
  const context = new Command("context").description(
    "named clusters (server, token file, CA) in $XDG_CONFIG_HOME/novactl/config.yaml",
  );

  withClientOptions(
    context.command("add").argument("<name>")
      .description("add or replace a context (--server and --ca are the global flags)")
      .option("--token-file <file>", "file holding the API token (read at each use)")
      .option("--use", "make it the current context"),
  ).action((name: string, opts: GlobalOpts & { tokenFile?: string; use?: boolean }) => {
    const server = typedGlobal(opts, "server");
    if (!server) throw new NovaError("usage", "context add needs --server URL");
    try {
      new URL(server);
    } catch {
      throw new NovaError("usage", `--server ${server} is not a URL`);
    }
    const ca = typedGlobal(opts, "ca");
    const entry = {
      name,
      server,
      ...(opts.tokenFile ? { "token-file": absolute(opts.tokenFile) } : {}),
      ...(ca ? { ca: absolute(ca) } : {}),
    };
    for (const f of [entry["token-file"], entry.ca]) {
      if (f) {
        try {
          Deno.statSync(f);
        } catch (err) {
          throw new NovaError("usage", `cannot read ${f}: ${(err as Error).message}`);
        }
      }
    }
    const config = loadConfig();
    const replaced = config.contexts.some((c) => c.name === name);
    config.contexts = [...config.contexts.filter((c) => c.name !== name), entry];
    if (opts.use || !config["current-context"]) config["current-context"] = name;
    saveConfig(config);
    const r = { ...entry, current: config["current-context"] === name, file: configPath() };
    render(opts.output, r, () => {
      console.log(`context ${name} ${replaced ? "replaced" : "added"} (${server})`);
      if (r.current) console.log(`current context: ${name}`);
    });
  });

  withClientOptions(
    context.command("use").argument("<name>").description("make a context the current one"),
  ).action((name: string, opts: GlobalOpts) => {
    const config = loadConfig();
    findContext(config, name);
    config["current-context"] = name;
    saveConfig(config);
    render(opts.output, { name, current: true }, () => console.log(`current context: ${name}`));
  });

  withClientOptions(
    context.command("list").alias("ls").description("list contexts (* marks the current one)"),
  ).action((opts: GlobalOpts) => {
    const config = loadConfig();
    const current = config["current-context"] ?? null;
    const r = { current, contexts: config.contexts };
    render(opts.output, r, () =>
      printTable(
        config.contexts.map((c) => ({
          current: c.name === current ? "*" : "",
          name: c.name,
          server: c.server,
          tokenFile: c["token-file"],
          ca: c.ca,
        })),
        ["current", "name", "server", "tokenFile", "ca"],
      ));
  });

  withClientOptions(
    context.command("current").description("print the current context's name"),
  ).action((opts: GlobalOpts) => {
    const config = loadConfig();
    const name = config["current-context"];
    if (!name) throw new NovaError("not_found", "no current context (novactl context use NAME)");
    render(opts.output, findContext(config, name), () => console.log(name));
  });

  withClientOptions(
    context.command("remove").alias("rm").argument("<name>").description("forget a context"),
  ).action((name: string, opts: GlobalOpts) => {
    const config = loadConfig();
    findContext(config, name);
    config.contexts = config.contexts.filter((c) => c.name !== name);
    if (config["current-context"] === name) delete config["current-context"];
    saveConfig(config);
    render(opts.output, { name, removed: true }, () => console.log(`context ${name} removed`));
  });
  return context;
}
