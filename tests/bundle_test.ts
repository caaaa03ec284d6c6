/**
 * The single-file bundle (`deno task bundle`) is a working novactl: it
 * bootstraps a node and answers the CLI, with no source tree beside it.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assertEquals } from "../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

testWithTimeout({
  name: "the deno bundle output runs a node and the CLI",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-bundle-" });
  const out = `${dir}/novactl.js`;
  const root = new URL("..", import.meta.url).pathname;
  const bundle = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--platform=deno", "-o", out, "main.ts"],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(bundle.code, 0, new TextDecoder().decode(bundle.stderr));
  const cluster = new NovactlCluster({ mainTs: out });
  try {
    await cluster.start(1);
    const status = JSON.parse(
      await cluster.cli([
        "cluster",
        "status",
        "-o",
        "json",
        "--server",
        cluster.urls[0],
        "--token",
        cluster.adminToken,
      ]),
    );
    assertEquals(status.leader, "n1");
    assertEquals(status.members.map((m: { role: string }) => m.role), ["voter"]);
  } finally {
    await cluster.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
