/**
 * The audit log on a real 3-node cluster with real QEMU (TCG): a create, a
 * refused create (403, viewer token) and an HA restart after the VM's host
 * process is SIGKILLed each leave one record naming its principal and source.
 * The client talks to a follower from its own loopback address (127.0.0.9,
 * through curl --interface), so a record of a forwarded request must carry
 * that address, not the forwarding follower's (127.0.0.1), and must be
 * recorded once, by the member that answered.
 */
import { clusterCaFile } from "../bench/lib/tls.ts";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, step } from "./support/api.ts";
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import type { AuditEntry } from "../core/fsm/mod.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/** The client's own source address: any 127/8 address reaches the nodes on 127.0.0.1. */
const CLIENT_ADDR = "127.0.0.9";

/** A JSON request through curl from CLIENT_ADDR; returns status, request id and body. */
async function curlFrom(
  method: string,
  url: string,
  token: string,
  body: unknown,
): Promise<{ status: number; requestId: string | null; body: unknown }> {
  const out = await new Deno.Command("curl", {
    args: [
      "-sS",
      "--interface",
      CLIENT_ADDR,
      "-X",
      method,
      "-H",
      `authorization: Bearer ${token}`,
      "-H",
      "content-type: application/json",
      "--data",
      JSON.stringify(body),
      "-D",
      "-",
      "--max-time",
      "60",
      ...(url.startsWith("https:") ? ["--cacert", clusterCaFile()!] : []),
      url,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert(out.success, `curl failed: ${new TextDecoder().decode(out.stderr)}`);
  const [head, ...rest] = text.split("\r\n\r\n");
  const status = Number(/^HTTP\/\S+ (\d+)/.exec(head)?.[1]);
  const requestId = /^x-request-id:\s*(\S+)/im.exec(head)?.[1] ?? null;
  return { status, requestId, body: JSON.parse(rest.join("\r\n\r\n") || "null") };
}

testWithTimeout({
  name: "audit: a create, a refused create and an HA restart, each with principal and source",
  timeoutMs: 15 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const base = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-audit-" });
  const cluster = new NovactlCluster({ baseDir: base, env: { NOVACTL_ACCEL: "tcg" } });
  await cluster.start(3);
  const admin = cluster.adminToken;
  try {
    const leader = await cluster.leaderName();
    const [host, front] = ["n1", "n2", "n3"].filter((n) => n !== leader);
    const frontUrl = cluster.node(front).url;
    const ok = async (...args: string[]) => {
      const r = await cli([...args, "--server", frontUrl, "--token", admin]);
      assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      return r.stdout;
    };
    const auditList = async (...filters: string[]) =>
      (JSON.parse(await ok("audit", "list", "-o", "json", ...filters)) as {
        entries: AuditEntry[];
      }).entries;
    let viewer = "";

    await step(t, "setup: guest image, shared pool, short lease, a viewer token", async () => {
      await ok(...guestImportArgs(guest, "guest"));
      await Deno.mkdir(`${base}/shared`);
      await ok("config", "set", "storage.sharedDir", `${base}/shared`);
      await ok("config", "set", "ha.leaseMs", "4000");
      const r = await api<{ token: string }>(`${frontUrl}/api/v1/tokens`, {
        method: "POST",
        token: admin,
        body: { name: "auditor-view", role: "viewer" },
      });
      assertEquals(r.status, 201, JSON.stringify(r.body));
      viewer = r.body.token;
    });

    let createId = "";
    let refusedId = "";
    await step(
      t,
      "a create and a refused create through a follower are recorded once each",
      async () => {
        const vm = { name: "web1", image: "guest", ha: true, node: host, start: true };
        const created = await curlFrom("POST", `${frontUrl}/api/v1/vms`, admin, vm);
        // 202 with its operation once the cluster runs at level 2 (VM lifecycle operations).
        assert([201, 202].includes(created.status), JSON.stringify(created.body));
        const refused = await curlFrom("POST", `${frontUrl}/api/v1/vms`, viewer, {
          ...vm,
          name: "web2",
        });
        assertEquals(refused.status, 403, JSON.stringify(refused.body));
        assert(created.requestId && refused.requestId, "answers carry x-request-id");
        createId = created.requestId!;
        refusedId = refused.requestId!;

        const entries = await eventually("both requests in the audit log", async () => {
          const all = await auditList("--resource", "vm");
          const ids = new Set(all.map((e) => e.requestId));
          return ids.has(createId) && ids.has(refusedId) ? all : undefined;
        }, 30_000);
        const byId = (id: string) => entries.filter((e) => e.requestId === id);
        assertEquals(byId(createId).length, 1, "the forwarded create is recorded once");
        assertEquals(byId(refusedId).length, 1, "the refused create is recorded once");
        const c = byId(createId)[0];
        assertEquals(
          [c.principal, c.role, c.source, c.method, c.route, c.resource, c.code, c.node],
          ["admin", "admin", CLIENT_ADDR, "POST", "/api/v1/vms", "vm/web1", created.status, leader],
          "the leader answered the forwarded create and records the client's address",
        );
        const r = byId(refusedId)[0];
        assertEquals(
          [r.principal, r.role, r.source, r.resource, r.code, r.node],
          ["auditor-view", "viewer", CLIENT_ADDR, "vm/web2", 403, front],
          "the follower refused it itself; its record reached the log through the leader",
        );
      },
    );

    await step(
      t,
      "the HA restart after its host's process is killed is recorded as system:ha",
      async () => {
        await eventually("web1 running on its host", async () => {
          const v = (await api<{ node: string; state: string }>(`${frontUrl}/api/v1/vms/web1`, {
            token: admin,
          })).body;
          return v.node === host && v.state === "running";
        }, 120_000);
        await cluster.kill(host, "SIGKILL");
        const moved = await eventually("web1 running elsewhere", async () => {
          const v = (await api<{ node: string; state: string }>(`${frontUrl}/api/v1/vms/web1`, {
            token: admin,
          })).body;
          return v.node !== host && v.state === "running" ? v : undefined;
        }, 120_000);
        const [ha] = await eventually("the HA restart in the audit log", async () => {
          const e = await auditList("--principal", "system:ha", "--resource", "vm/web1");
          return e.length ? e : undefined;
        }, 30_000);
        const lead = await cluster.leaderName();
        assertEquals(
          [ha.principal, ha.method, ha.route, ha.resource, ha.node, ha.source],
          ["system:ha", "SYSTEM", "ha.restart", "vm/web1", lead, lead],
        );
        assert(ha.detail?.includes(`to ${moved.node}`), ha.detail ?? "no detail");

        const table = await ok("audit", "list", "--since", "1h");
        const header = table.split("\n")[0];
        for (const col of ["TIME", "PRINCIPAL", "SOURCE", "METHOD", "TARGET", "CODE", "MS"]) {
          assert(header.includes(col), `table header: ${header}`);
        }
        assert(table.includes("system:ha") && table.includes("auditor-view"), table);
        // Viewers may read the cluster but not its audit log.
        const asViewer = await cli(["audit", "list", "--server", frontUrl, "--token", viewer]);
        assertEquals(asViewer.code, 1, asViewer.stderr);
      },
    );
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
});
