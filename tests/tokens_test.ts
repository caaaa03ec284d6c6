/**
 * API tokens and roles through the real CLI on a real 1-node cluster: a
 * viewer reads but cannot write, an operator drives VMs but cannot change the
 * configuration or tokens, an expired or revoked token gets 401, and rotating
 * the bootstrap admin token retires the old secret. Every CLI call goes
 * through NovactlCluster.cli, so it uses whatever transport the harness sets
 * up (plain HTTP or HTTPS with the cluster CA).
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli, sleep, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/** A CLI call's outcome: exit code and stdout, or the error text it printed. */
interface Outcome {
  code: number;
  stdout: string;
  error: string;
}

testWithTimeout({
  name: "tokens: roles, expiry, revocation and rotation through the CLI",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster();
  await cluster.start(1);
  const [n1] = cluster.nodes;
  let admin = cluster.adminToken;
  const work = await Deno.makeTempDir({ prefix: "novactl-tokens-" });
  const as = async (token: string, ...args: string[]): Promise<Outcome> => {
    const r = await cli([...args, "--server", n1.url, "--token", token]);
    return { code: r.code, stdout: r.stdout, error: r.stderr };
  };
  const ok = async (token: string, ...args: string[]): Promise<string> => {
    const r = await as(token, ...args);
    assertEquals(r.code, 0, `novactl ${args.join(" ")}: ${r.error}`);
    return r.stdout;
  };
  /** The secret `token create|rotate` prints alone on its last line. */
  const secretOf = (stdout: string) => stdout.trim().split("\n").at(-1)!.trim();
  const refused = async (token: string, want: RegExp, ...args: string[]) => {
    const r = await as(token, ...args);
    assertEquals(r.code, 1, `novactl ${args.join(" ")} should fail`);
    assert(want.test(r.error), `novactl ${args.join(" ")}: ${r.error}`);
  };
  const FORBIDDEN = /may not do this/;
  try {
    const kernel = `${work}/vmlinuz`;
    await Deno.writeFile(kernel, crypto.getRandomValues(new Uint8Array(4096)));
    await ok(admin, "image", "import", "tiny", "--kernel", kernel);

    await step(t, "a viewer reads, and every write is 403", async () => {
      const viewer = secretOf(await ok(admin, "token", "create", "watcher", "--role", "viewer"));
      assert(viewer.startsWith("nva_"), viewer);
      await ok(viewer, "vm", "list");
      await ok(viewer, "image", "list");
      await refused(viewer, FORBIDDEN, "vm", "create", "v0", "--image", "tiny", "--no-start");
      await refused(viewer, FORBIDDEN, "token", "list");
    });

    await step(t, "an operator creates a VM but cannot set config or create tokens", async () => {
      const operator = secretOf(await ok(admin, "token", "create", "ops", "--role", "operator"));
      await ok(operator, "vm", "create", "v1", "--image", "tiny", "--no-start");
      assert((await ok(admin, "vm", "list")).includes("v1"));
      await refused(operator, FORBIDDEN, "config", "set", "cluster.description", "x");
      await refused(operator, FORBIDDEN, "token", "create", "mine", "--role", "viewer");
      await refused(operator, FORBIDDEN, "cluster", "token", "create");
    });

    await step(t, "token list shows names, roles and expiry, never secrets", async () => {
      const list = await ok(admin, "token", "list", "-o", "json");
      const tokens = (JSON.parse(list) as { tokens: { name: string; role: string }[] }).tokens;
      assertEquals(tokens.map((x) => `${x.name}:${x.role}`), [
        "admin:admin",
        "ops:operator",
        "watcher:viewer",
      ]);
      assert(!list.includes("nva_"), "a secret is listed");
    });

    await step(t, "bad names and ttls are refused, naming the field", async () => {
      await refused(admin, /name/, "token", "create", "Not Valid", "--role", "viewer");
      // A ttl that is no duration is bad usage, refused before anything is sent.
      const soon = await as(admin, "token", "create", "x", "--role", "viewer", "--ttl", "soon");
      assertEquals(soon.code, 2, soon.error);
      assert(/--ttl/.test(soon.error) && /not a duration/.test(soon.error), soon.error);
      await refused(admin, /exists/, "token", "create", "ops", "--role", "viewer");
    });

    await step(t, "a token past its ttl gets 401 token expired", async () => {
      const brief = secretOf(
        await ok(admin, "token", "create", "brief", "--role", "admin", "--ttl", "1s"),
      );
      // Not a timing assertion: the token must outlive nothing, only be past its expiry.
      await sleep(1_500);
      await refused(brief, /token expired/, "vm", "list");
    });

    await step(t, "a revoked token gets 401 at once", async () => {
      const temp = secretOf(await ok(admin, "token", "create", "temp", "--role", "operator"));
      await ok(temp, "vm", "list");
      await ok(admin, "token", "revoke", "temp");
      await refused(temp, /invalid API token/, "vm", "list");
      await refused(admin, /not found|no token/i, "token", "revoke", "temp");
    });

    await step(t, "rotating the bootstrap admin token: old 401, new 200", async () => {
      const fresh = secretOf(await ok(admin, "token", "rotate", "admin"));
      assert(fresh.startsWith("nva_") && fresh !== admin);
      await refused(admin, /invalid API token/, "vm", "list");
      await ok(fresh, "token", "list");
      admin = fresh;
    });
  } finally {
    await cluster.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
