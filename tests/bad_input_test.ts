/**
 * Bad input against a real node: every case gets the documented error and
 * leaves the replicated state exactly as it was.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, sleep, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface ErrorBody {
  error: { code: string; message: string; details?: { fields?: { field: string }[] } };
}

testWithTimeout({
  name: "bad input is rejected with the documented error and changes nothing",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster();
  await cluster.start(1);
  const url = cluster.urls[0];
  const token = cluster.adminToken;
  const stateFingerprint = async () => {
    const cfg = await api<{ version: number }>(`${url}/api/v1/config`, { token });
    const st = await api<{ members: unknown[] }>(`${url}/api/v1/cluster`, { token });
    return { version: cfg.body.version, members: st.body.members.length };
  };
  const joinWith = (joinToken: string, name = "nx") =>
    api<ErrorBody>(`${url}/api/v1/cluster/join`, {
      method: "POST",
      body: {
        name,
        url: "http://127.0.0.1:1",
        token: joinToken,
        csr: "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n",
        inventory: {
          cpus: 1,
          memoryMiB: 1,
          diskGiB: 1,
          diskFreeGiB: 1,
          accel: "tcg",
          arch: "x86_64",
          kernel: "k",
          hostname: "h",
          version: "0",
        },
      },
    });

  try {
    const before = await stateFingerprint();

    await step(t, "missing or wrong API token → 401", async () => {
      const a = await api<ErrorBody>(`${url}/api/v1/config`);
      assertEquals(a.status, 401);
      assertEquals(a.body.error.code, "unauthorized");
      const b = await api<ErrorBody>(`${url}/api/v1/config/cluster.name`, {
        method: "PUT",
        token: "nva_wrong",
        body: { value: "x" },
      });
      assertEquals(b.status, 401);
    });

    await step(t, "malformed JSON → 400 naming the body", async () => {
      const r = await api<ErrorBody>(`${url}/api/v1/config`, {
        method: "PATCH",
        token,
        raw: "{nope",
      });
      assertEquals(r.status, 400);
      assertEquals(r.body.error.code, "validation");
      assertEquals(r.body.error.details?.fields?.[0].field, "body");
    });

    await step(t, "unknown config key and bad values → 400 naming each field", async () => {
      const r = await api<ErrorBody>(`${url}/api/v1/config`, {
        method: "PATCH",
        token,
        body: { "no.such.key": 1, "cluster.maxVoters": 4 },
      });
      assertEquals(r.status, 400);
      const fields = r.body.error.details?.fields?.map((f) => f.field).sort();
      assertEquals(fields, ["cluster.maxVoters", "no.such.key"]);
      const c = await cli([
        "config",
        "set",
        "scheduler.strategy",
        "random",
        "--server",
        url,
        "--token",
        token,
      ]);
      assertEquals(c.code, 1);
      assert(/scheduler\.strategy/.test(c.stderr), c.stderr);
      assertEquals(c.stderr.trim().split("\n").length, 1, "one clear line on stderr");
    });

    await step(t, "stale If-Match → 409 and the value is unchanged", async () => {
      const r = await api<ErrorBody>(`${url}/api/v1/config/cluster.name`, {
        method: "PUT",
        token,
        body: { value: "stale" },
        headers: { "if-match": String(before.version + 100) },
      });
      assertEquals(r.status, 409);
      assertEquals(r.body.error.code, "conflict");
    });

    await step(t, "wrong, expired and reused join tokens → 401", async () => {
      assertEquals((await joinWith("nvj_forged")).status, 401);
      const short = await api<{ token: string; expiresAt: string }>(
        `${url}/api/v1/cluster/tokens`,
        { method: "POST", token, body: { ttl: "1s" } },
      );
      assertEquals(short.status, 201);
      // Until just past the expiry the server reported (same host, same clock).
      await sleep(Math.max(0, Date.parse(short.body.expiresAt) - Date.now()) + 100);
      const expired = await joinWith(short.body.token);
      assertEquals(expired.status, 401);
      assert(/expired/.test(expired.body.error.message), expired.body.error.message);
    });

    const afterErrors = await stateFingerprint();
    assertEquals(
      afterErrors,
      before,
      "no rejected request changed the configuration or membership",
    );

    await step(t, "a used join token cannot be used again", async () => {
      const created = await cli([
        "cluster",
        "token",
        "create",
        "--ttl",
        "10m",
        "--server",
        url,
        "--token",
        token,
      ]);
      assertEquals(created.code, 0, created.stderr);
      const jt = created.stdout.trim().split("\n").at(-1)!;
      const node = await cluster.addNodeWithToken(jt);
      assert(node, "first use joins");
      const reuse = await joinWith(jt, "ny");
      assertEquals(reuse.status, 401);
      assert(/already used/.test(reuse.body.error.message), reuse.body.error.message);
    });

    await step(t, "CLI: bad usage exits 2, -o json prints exactly one document", async () => {
      const bad = await cli(["config", "set", "onlykey", "--server", url, "--token", token]);
      assertEquals(bad.code, 2);
      const bogusOutput = await cli([
        "cluster",
        "status",
        "-o",
        "xml",
        "--server",
        url,
        "--token",
        token,
      ]);
      assertEquals(bogusOutput.code, 2);
      const json = await cli([
        "cluster",
        "status",
        "-o",
        "json",
        "--server",
        url,
        "--token",
        token,
      ]);
      assertEquals(json.code, 0, json.stderr);
      const doc = JSON.parse(json.stdout);
      for (const k of ["leader", "term", "commitIndex", "members"]) {
        assert(k in doc, `status has ${k}`);
      }
      const help = await cli(["config", "set", "--help"]);
      assertEquals(help.code, 0);
      assert(/--if-match/.test(help.stdout));
    });

    await step(
      t,
      "CLI networks: bad subnets, VLANs and addresses are refused, naming the field; nothing changes",
      async () => {
        const nova = (...args: string[]) => cli([...args, "--server", url, "--token", token]);
        const ok = await nova("network", "create", "blue", "--subnet", "10.10.0.0/24");
        assertEquals(ok.code, 0, ok.stderr);
        const listed = async () => (await nova("network", "list", "-o", "json")).stdout;
        const before = await listed();
        const refused: [string[], RegExp][] = [
          [
            ["network", "create", "b2", "--subnet", "10.10.0.0/16"],
            /subnet: .*overlaps network "blue"/,
          ],
          [["network", "create", "b3", "--subnet", "10.20.0.1/24"], /subnet: .*host bits/],
          [[
            "network",
            "create",
            "b4",
            "--type",
            "vlan",
            "--vlan",
            "5000",
            "--subnet",
            "10.30.0.0/24",
          ], /vlan/],
          [["network", "create", "b5", "--type", "bogus", "--subnet", "10.40.0.0/24"], /bogus/],
          [
            ["network", "create", "b6", "--subnet", "10.50.0.0/24", "--gateway", "10.51.0.1"],
            /gateway: /,
          ],
        ];
        for (const [args, message] of refused) {
          const r = await nova(...args);
          assert(r.code !== 0, `${args.join(" ")} refused`);
          assert(message.test(r.stderr), `${args.join(" ")}: ${r.stderr}`);
        }
        assertEquals(await listed(), before, "no network added");
        const unknown = await nova("vm", "create", "n1", "--image", "none", "--nic", "red");
        assert(unknown.code !== 0 && /red|image/.test(unknown.stderr), unknown.stderr);
        const del = await nova("network", "delete", "blue");
        assertEquals(del.code, 0, del.stderr);
        assertEquals(JSON.parse(await listed()).networks, []);
      },
    );
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
  }
});
