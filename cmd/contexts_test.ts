/**
 * Contexts against two stand-in servers: a context switch sends the next command to the other
 * cluster with that cluster's token; flags beat the environment, which beats the current context;
 * a typed `--context` beats the environment; the config file is mode 0600.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli, standIn, withEnv } from "./testing.ts";
import { loadConfig } from "./contexts.ts";

const NO_NOVACTL_ENV = {
  NOVACTL_SERVER: undefined,
  NOVACTL_TOKEN: undefined,
  NOVACTL_CA: undefined,
  NOVACTL_CONTEXT: undefined,
};

Deno.test("contexts: add, use, list, remove; a switch targets the other cluster", async () => {
  const a = standIn("a", [{ name: "vm-of-a" }]);
  const b = standIn("b", [{ name: "vm-of-b" }]);
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/a.token`, "token-a\n");
  await Deno.writeTextFile(`${dir}/b.token`, "token-b\n");
  try {
    await withEnv({ ...NO_NOVACTL_ENV, XDG_CONFIG_HOME: `${dir}/config` }, async () => {
      const names = async (...args: string[]) => {
        const r = await cli(...args);
        assertEquals([r.code, r.stderr], [0, ""], r.stderr);
        return r.stdout.trim().split("\n");
      };
      let r = await cli("context", "add", "a", "--server", a.url, "--token-file", `${dir}/a.token`);
      assertEquals(r.code, 0, r.stderr);
      // The global flags work before the subcommand for context add too.
      r = await cli("--server", b.url, "context", "add", "b", "--token-file", `${dir}/b.token`);
      assertEquals(r.code, 0, r.stderr);

      const file = `${dir}/config/novactl/config.yaml`;
      assertEquals((await Deno.stat(file)).mode! & 0o777, 0o600);
      const config = loadConfig(file);
      assertEquals(config["current-context"], "a", "the first context added becomes current");
      assertEquals(config.contexts.map((c) => [c.name, c.server]), [["a", a.url], ["b", b.url]]);

      assertEquals(await names("vm", "list", "-o", "name"), ["vm-of-a"]);
      assertEquals(a.seen.at(-1)!.authorization, "Bearer token-a");

      assertEquals(await names("context", "use", "b", "-q"), ["b"]);
      assertEquals(await names("vm", "list", "-q"), ["vm-of-b"]);
      assertEquals(b.seen.at(-1)!.authorization, "Bearer token-b");

      // --context picks another for one command, before or after the subcommand.
      assertEquals(await names("--context", "a", "vm", "list", "-q"), ["vm-of-a"]);
      assertEquals(await names("vm", "list", "-q", "--context", "a"), ["vm-of-a"]);
      assertEquals(a.seen.at(-1)!.authorization, "Bearer token-a");

      const list = JSON.parse((await cli("context", "list", "-o", "json")).stdout);
      assertEquals(list.current, "b");
      assertEquals(list.contexts.length, 2);
      const table = (await cli("context", "list")).stdout.split("\n");
      assert(/^\*\s+b\s/.test(table.find((l) => l.includes(b.url))!), table.join("\n"));

      // An unknown context is bad usage, listing the known ones.
      r = await cli("--context", "nope", "vm", "list");
      assertEquals(r.code, 2);
      assert(/no context "nope" \(contexts: a, b/.test(r.stderr), r.stderr);

      assertEquals((await cli("context", "remove", "b")).code, 0);
      assertEquals(loadConfig(file)["current-context"], undefined);
      assertEquals(loadConfig(file).contexts.map((c) => c.name), ["a"]);
    });
  } finally {
    await a.close();
    await b.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("contexts: flag > env > current context, and a typed --context beats the env", async () => {
  const a = standIn("a", [{ name: "vm-of-a" }]);
  const b = standIn("b", [{ name: "vm-of-b" }]);
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/a.token`, "token-a");
  try {
    await withEnv({ ...NO_NOVACTL_ENV, XDG_CONFIG_HOME: dir }, async () => {
      const first = async (...args: string[]) => {
        const r = await cli(...args);
        assertEquals(r.code, 0, r.stderr);
        return r.stdout.trim();
      };
      await first("context", "add", "a", "--server", a.url, "--token-file", `${dir}/a.token`);
      assertEquals(await first("vm", "list", "-q"), "vm-of-a");
      // The environment's server beats the current context, and the context's token is not
      // sent to it (it belongs to the context's server).
      await withEnv({ NOVACTL_SERVER: b.url }, async () => {
        assertEquals(await first("vm", "list", "-q"), "vm-of-b");
        assertEquals(b.seen.at(-1)!.authorization, null);
        // A typed --context is the more specific wish.
        assertEquals(await first("vm", "list", "-q", "--context", "a"), "vm-of-a");
      });
      // A flag beats the context; a flag token goes with it.
      assertEquals(await first("vm", "list", "-q", "--server", b.url, "--token", "t-b"), "vm-of-b");
      assertEquals(b.seen.at(-1)!.authorization, "Bearer t-b");
      // The env token with the context's server (the server is the context's, so it may).
      await withEnv({ NOVACTL_TOKEN: "env-token" }, async () => {
        assertEquals(await first("vm", "list", "-q"), "vm-of-a");
        assertEquals(a.seen.at(-1)!.authorization, "Bearer env-token");
      });
    });
  } finally {
    await a.close();
    await b.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("contexts: add needs a typed --server; a broken config file names itself", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withEnv({ ...NO_NOVACTL_ENV, XDG_CONFIG_HOME: dir }, async () => {
      let r = await withEnv(
        { NOVACTL_SERVER: "http://127.0.0.1:9" },
        () => cli("context", "add", "x"),
      );
      assertEquals(r.code, 2);
      assert(/needs --server/.test(r.stderr), r.stderr);
      r = await cli("context", "add", "x", "--server", "http://h:1", "--token-file", `${dir}/none`);
      assertEquals(r.code, 2, r.stderr);
      await Deno.mkdir(`${dir}/novactl`);
      await Deno.writeTextFile(`${dir}/novactl/config.yaml`, "contexts: [{name: x, sever: y}]\n");
      r = await cli("vm", "list");
      assertEquals(r.code, 1);
      assert(r.stderr.includes(`${dir}/novactl/config.yaml`), r.stderr);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
