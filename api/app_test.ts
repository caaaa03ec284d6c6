/**
 * The real API app (createApp) over a real one-voter leader, driven
 * in-process: who may do what, which fields a bad body names, the body cap,
 * and that nothing refused changes the replicated state.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { MAX_JSON_BODY_BYTES } from "./validate.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

async function harness() {
  const { c, call, tokens } = await startTestApp();
  return { c, call, tokens, fieldsOf };
}

const opts = { sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  { timeoutMs: 2 * MINUTE, name: "API: authentication and roles", ...opts },
  async (t) => {
    const { c, call, tokens } = await harness();
    try {
      await t.step("health and metrics need no token", async () => {
        assertEquals((await call("GET", "/healthz")).status, 200);
        const metrics = await call("GET", "/metrics");
        assertEquals(metrics.status, 200);
        const rss = /^novactl_process_resident_memory_bytes (\d+)/m.exec(String(metrics.body));
        assert(rss && Number(rss[1]) > 10 << 20, "the node's RSS is reported");
        const heap = /^novactl_process_heap_used_bytes (\d+)/m.exec(String(metrics.body));
        const reserved = /^novactl_process_heap_total_bytes (\d+)/m.exec(String(metrics.body));
        assert(heap && reserved && Number(heap[1]) > 0, "the JavaScript heap is reported");
        assert(Number(heap[1]) <= Number(reserved[1]) && Number(reserved[1]) <= Number(rss[1]));
        const external = /^novactl_process_external_memory_bytes (\d+)/m.exec(String(metrics.body));
        assert(external && Number(external[1]) < Number(rss[1]), "memory held outside the heap");
      });

      await t.step("no token, a wrong one, or another scheme → 401 unauthorized", async () => {
        for (const authorization of [undefined, "Bearer nva_wrong", `Basic ${tokens.admin}`]) {
          const r = await call("GET", "/api/v1/vms", {
            headers: authorization ? { authorization } : {},
          });
          assertEquals([r.status, r.body.error.code], [401, "unauthorized"], authorization);
        }
      });

      await t.step("viewers read; every write needs operator → 403 forbidden", async () => {
        for (const path of ["/api/v1/vms", "/api/v1/nodes", "/api/v1/groups", "/api/v1/images"]) {
          assertEquals((await call("GET", path, { token: tokens.viewer })).status, 200, path);
        }
        const writes: [string, string][] = [
          ["POST", "/api/v1/vms"],
          ["POST", "/api/v1/vms/x/stop"],
          ["DELETE", "/api/v1/vms/x"],
          ["POST", "/api/v1/groups"],
          ["POST", "/api/v1/nodes/n1/cordon"],
          ["POST", "/api/v1/cluster/rebalance"],
        ];
        for (const [method, path] of writes) {
          // The role is checked before the body: even a bad body is 403, not 400.
          const r = await call(method, path, { token: tokens.viewer, body: { bogus: true } });
          assertEquals([r.status, r.body.error.code], [403, "forbidden"], `${method} ${path}`);
          assert(/viewer .*operator required/.test(r.body.error.message), r.body.error.message);
        }
      });

      await t.step("config, join tokens and membership need admin", async () => {
        const adminOnly: [string, string, unknown][] = [
          ["PATCH", "/api/v1/config", { "cluster.description": "x" }],
          ["PUT", "/api/v1/config/cluster.description", { value: "x" }],
          ["POST", "/api/v1/config/rollback", { version: 1 }],
          ["POST", "/api/v1/cluster/tokens", {}],
          ["DELETE", "/api/v1/cluster/members/n2", undefined],
          ["POST", "/api/v1/cluster/transfer-leader", { name: "n1" }],
        ];
        for (const [method, path, body] of adminOnly) {
          for (const who of ["viewer", "operator"] as const) {
            const r = await call(method, path, { token: tokens[who], body });
            assertEquals(r.status, 403, `${who} ${method} ${path}`);
          }
        }
        assertEquals(
          (await call("POST", "/api/v1/cluster/tokens", { token: tokens.admin, body: {} })).status,
          201,
        );
      });

      await t.step("operators write VMs and groups", async () => {
        const r = await call("POST", "/api/v1/groups", {
          token: tokens.operator,
          body: { name: "web", policy: "anti-affinity" },
        });
        assertEquals(r.status, 201);
      });
    } finally {
      await c.stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "API: bad bodies on the main routes → 400 naming each failing field",
    ...opts,
  },
  async (t) => {
    const { c, call, tokens, fieldsOf } = await harness();
    const token = tokens.admin;
    const fingerprint = () => ({
      config: c.node.fsm.config().version,
      vms: c.node.fsm.vms().length,
      groups: c.node.fsm.groups().length,
      images: c.node.fsm.images().length,
    });
    try {
      await c.vm({ name: "web", node: "n1", desired: "stopped" }, "stopped");
      const before = fingerprint();
      const rejects = async (
        method: string,
        path: string,
        body: unknown,
        fields: string[],
        headers: Record<string, string> = {},
      ) => {
        const r = typeof body === "string"
          ? await call(method, path, { token, raw: body, headers })
          : await call(method, path, { token, body, headers });
        assertEquals([r.status, r.body.error.code], [400, "validation"], JSON.stringify(r.body));
        assertEquals(fieldsOf(r), fields, r.body.error.message);
      };

      await t.step("POST /vms", async () => {
        await rejects("POST", "/api/v1/vms", {
          name: "Bad_Name",
          image: "img",
          cpus: 0,
          memoryMiB: 8,
          labels: { tier: 7 },
          restartPolicy: "sometimes",
          constraints: [{ key: "zone", op: "~", value: "a" }],
        }, ["constraints.0.op", "cpus", "labels.tier", "memoryMiB", "name", "restartPolicy"]);
        await rejects("POST", "/api/v1/vms", { name: "ok" }, ["image"]);
        await rejects("POST", "/api/v1/vms", { name: "ok", image: "img", cpu: 2 }, ["body"]);
        await rejects("POST", "/api/v1/vms", { name: "ok", image: "no-such" }, ["image"]);
      });

      await t.step("VM resize, clone, migrate and snapshot", async () => {
        await rejects("POST", "/api/v1/vms/web/resize", { cpus: "two", memoryMiB: 1.5 }, [
          "cpus",
          "memoryMiB",
        ]);
        await rejects("POST", "/api/v1/vms/web/clone", { mode: "deep" }, ["mode", "name"]);
        await rejects("POST", "/api/v1/vms/web/migrate", { to: "" }, ["to"]);
        await rejects("POST", "/api/v1/vms/web/snapshots", { name: "../x" }, ["name"]);
      });

      await t.step("groups, images and join", async () => {
        await rejects("POST", "/api/v1/groups", { name: "g", policy: "near", strict: "yes" }, [
          "policy",
          "strict",
        ]);
        await rejects("POST", "/api/v1/images", {
          name: "UPPER",
          source: "",
          kernel: { sha256: "zz", size: -1 },
        }, ["kernel.sha256", "kernel.size", "name", "source"]);
        const join = await call("POST", "/api/v1/cluster/join", {
          body: { name: "n9", url: "not a url", token: "", inventory: {} },
        });
        assertEquals(join.status, 400);
        assert(
          ["inventory.cpus", "token", "url"].every((f) => fieldsOf(join).includes(f)),
          fieldsOf(join).join(),
        );
      });

      await t.step("config: values, keys, rollback, If-Match, join-token ttl", async () => {
        await rejects("PATCH", "/api/v1/config", { "cluster.maxVoters": 4, "no.such": 1 }, [
          "cluster.maxVoters",
          "no.such",
        ]);
        await rejects("POST", "/api/v1/config/rollback", { version: -1 }, ["version"]);
        await rejects(
          "PUT",
          "/api/v1/config/cluster.description",
          { value: "x" },
          ["If-Match"],
          { "if-match": "abc" },
        );
        await rejects("POST", "/api/v1/cluster/tokens", { ttl: "soon" }, ["ttl"]);
      });

      await t.step("malformed JSON names the body", async () => {
        await rejects("POST", "/api/v1/vms", "{nope", ["body"]);
      });

      await t.step("a refused request changed nothing", () => {
        assertEquals(fingerprint(), before);
      });
    } finally {
      await c.stop();
    }
  },
);

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "API: not found and conflict keep the error shape",
  ...opts,
}, async () => {
  const { c, call, tokens } = await harness();
  try {
    const vm = await call("GET", "/api/v1/vms/ghost", { token: tokens.viewer });
    assertEquals(vm.status, 404);
    assertEquals(vm.body.error.code, "not_found");
    assertEquals(vm.body.error.details as unknown, { kind: "vm", name: "ghost" });
    const route = await call("GET", "/api/v1/nope", { token: tokens.viewer });
    assertEquals([route.status, route.body.error.code], [404, "not_found"]);
    const group = { name: "g", policy: "affinity" };
    assertEquals(
      (await call("POST", "/api/v1/groups", { token: tokens.admin, body: group })).status,
      201,
    );
    const again = await call("POST", "/api/v1/groups", { token: tokens.admin, body: group });
    assertEquals([again.status, again.body.error.code], [409, "conflict"]);
  } finally {
    await c.stop();
  }
});

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "API: JSON bodies are capped at 1 MiB → 413, declared or streamed",
    ...opts,
  },
  async (t) => {
    const { c, call, tokens } = await harness();
    const token = tokens.admin;
    const create = (name: string) => JSON.stringify({ name, image: "img", start: false });
    try {
      await t.step("a body just under the cap is read", async () => {
        const body = create("under").padEnd(MAX_JSON_BODY_BYTES, " ");
        const r = await call("POST", "/api/v1/vms", { token, raw: body });
        assertEquals(r.status, 201, JSON.stringify(r.body));
      });

      await t.step("one byte over the cap → 413 too_large, nothing created", async () => {
        const body = create("over").padEnd(MAX_JSON_BODY_BYTES + 1, " ");
        const r = await call("POST", "/api/v1/vms", { token, raw: body });
        assertEquals([r.status, r.body.error.code], [413, "too_large"]);
        assertEquals(c.node.fsm.vm("over"), null);
      });

      await t.step(
        "a streamed body with no length is cut off at the cap, not read whole",
        async () => {
          let sent = 0;
          const chunk = new TextEncoder().encode(" ".repeat(64 * 1024));
          const long = new ReadableStream<Uint8Array>({
            // Ends at 4 MiB, so a missing cap shows as a wrong answer rather than a hang.
            pull(ctl) {
              if (sent >= 4 * MAX_JSON_BODY_BYTES) return ctl.close();
              sent += chunk.byteLength;
              ctl.enqueue(chunk);
            },
          });
          const r = await call("PATCH", "/api/v1/config", { token, raw: long });
          assertEquals([r.status, r.body.error.code], [413, "too_large"]);
          assert(sent < 2 * MAX_JSON_BODY_BYTES, `read ${sent} bytes of a 4 MiB body`);
        },
      );

      await t.step("a declared length over the cap is refused before reading", async () => {
        const r = await call("POST", "/api/v1/groups", {
          token,
          raw: "{}",
          headers: { "content-length": String(MAX_JSON_BODY_BYTES + 1) },
        });
        assertEquals(r.status, 413);
      });
    } finally {
      await c.stop();
    }
  },
);
