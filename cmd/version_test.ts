import { assert, assertEquals } from "../core/testing/assert.ts";
import { VERSION } from "../core/version.ts";
import { cli, servedCluster, withEnv } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";
import { freePorts } from "../bench/lib/util.ts";

const opts = { timeoutMs: MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout({ name: "novactl version: the client's and the server's", ...opts }, async () => {
  const { c, url, cli: served, stop } = await servedCluster();
  try {
    const table = await served("version");
    assertEquals(table.code, 0, table.stderr);
    assertEquals(
      table.stdout,
      `Client Version: ${VERSION}\nServer Version: ${VERSION} (node ${c.node.id}, API v1)\n`,
    );
    const json = await served("version", "-o", "json");
    assertEquals(json.code, 0, json.stderr);
    assertEquals(JSON.parse(json.stdout), {
      client: { version: VERSION, api: "v1", deno: Deno.version.deno },
      server: { version: VERSION, api: "v1", node: c.node.id, deno: Deno.version.deno },
    });
    // Any role may ask; no token may not.
    const viewer = await served("token", "create", "v", "--role", "viewer");
    const token = viewer.stdout.trim().split("\n").pop()!;
    const asViewer = await cli("version", "-o", "json", "--server", url, "--token", token);
    assertEquals(asViewer.code, 0, asViewer.stderr);
    const anonymous = await cli("version", "--server", url, "--token", "");
    assertEquals(anonymous.code, 1);
    assert(anonymous.stderr.includes("server version unknown"), anonymous.stderr);
  } finally {
    await stop();
  }
});

testWithTimeout({ name: "novactl version: an unreachable server", ...opts }, async () => {
  const dir = await Deno.makeTempDir();
  try {
    await withEnv({ XDG_CONFIG_HOME: dir, NOVACTL_TOKEN: "t" }, async () => {
      const server = `http://127.0.0.1:${freePorts(1)[0]}`;
      const r = await cli("version", "-o", "json", "--server", server);
      assertEquals(r.code, 1);
      const doc = JSON.parse(r.stdout); // still one document, naming what failed
      assertEquals(doc.client.version, VERSION);
      assertEquals(doc.server, null);
      assert(doc.serverError.includes(`cannot reach ${server}`), doc.serverError);
      assert(r.stderr.includes("server version unknown: cannot reach"), r.stderr);
      const table = await cli("version", "--server", server);
      assertEquals([table.code, table.stdout], [1, `Client Version: ${VERSION}\n`]);
      const client = await cli("version", "--client", "--server", server);
      assertEquals([client.code, client.stdout], [0, `Client Version: ${VERSION}\n`]);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
