/**
 * `node start --listen HOST:0`: the node binds a port the kernel picks, advertises and reports
 * it, and a restart with `:0` again comes back at the same URL (members know it by that URL).
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface ListenReport {
  url: string;
  listen: string;
  pid: number;
}

const readReport = async (dataDir: string) =>
  JSON.parse(await Deno.readTextFile(`${dataDir}/listen.json`)) as ListenReport;

testWithTimeout({
  name: "--listen HOST:0 binds a kernel-picked port, reports it, and keeps it across restarts",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  await using cluster = new NovactlCluster({ env: { NOVACTL_ACCEL: "tcg" } });
  await cluster.start(2, { voters: 1 }); // a second voter would make an even count: n2 stays a learner
  try {
    const first = new Map<string, string>();
    await step(t, "each node reports the port it bound and advertises it", async () => {
      const status = await cluster.status();
      for (const node of cluster.nodes) {
        assertEquals(node.listen, "127.0.0.1:0", "started with port 0");
        const report = await readReport(node.dataDir);
        const port = Number(new URL(report.url).port);
        assert(port > 0, `${node.name} reported a real port: ${report.url}`);
        assertEquals(report.listen, `127.0.0.1:${port}`);
        assertEquals(status.members.find((m) => m.name === node.name)?.url, report.url);
        const log = await Deno.readTextFile(node.logPath);
        assert(log.includes("node listening") && log.includes(report.url), "logged");
        first.set(node.name, report.url);
      }
      assertEquals(new Set(first.values()).size, 2, "two nodes, two ports");
    });

    await step(t, "a node killed and restarted with :0 comes back at its old URL", async () => {
      await cluster.kill("n2", "SIGKILL");
      await cluster.restart("n2"); // throws if the reported URL changed
      const report = await readReport(cluster.node("n2").dataDir);
      assertEquals(report.url, first.get("n2"));
      assertEquals(report.pid, cluster.node("n2").process?.pid);
      await cluster.waitForVoters(1, ["n1"]);
      const status = await cluster.status("n2");
      assertEquals(status.members.find((m) => m.name === "n2")?.url, first.get("n2"));
    });
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  }
});
