/**
 * Hardened inputs on a real node, through the harness's CLI and HTTP helpers
 * (so the test follows whatever transport the harness uses):
 *
 * - labels far beyond their caps (the review's 5.6 MB, and 0.9 MB under the
 *   body cap) are refused and never reach the Raft log (commit index unchanged);
 * - a qcow2 whose backing file is a host path is refused and no image is kept;
 * - an upload over `images.maxUploadBytes` is refused (413) with no partial file;
 * - viewers and operators never see the cloud-init password hash or
 *   user-data, and neither appears in the node's (debug) log;
 * - the data dir is 0700 and its databases, identity and token 0600 after a
 *   start on a pre-existing 0755 dir, and again after a restart that found
 *   them loosened.
 */
import { DatabaseSync } from "node:sqlite";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { requestJson } from "../bench/lib/util.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/** A CLI call's outcome: exit code and stdout, or the error text it printed. */
interface Outcome {
  code: number;
  stdout: string;
  error: string;
}

interface ErrorBody {
  error: { code: string; message: string; details?: { fields?: { field: string }[] } };
}

const modeOf = async (path: string) => ((await Deno.stat(path)).mode ?? 0) & 0o777;

async function qemuImg(...args: string[]): Promise<void> {
  const out = await new Deno.Command("qemu-img", { args, stdout: "null", stderr: "piped" })
    .output();
  assert(out.success, new TextDecoder().decode(out.stderr));
}

testWithTimeout({
  name: "hardening: caps, unsafe images, upload limit, redaction, data dir modes",
  timeoutMs: 8 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const baseDir = await Deno.makeTempDir({ prefix: "novactl-hardening-" });
  // The node's data dir exists before the first start, world-readable.
  await Deno.mkdir(`${baseDir}/n1`, { mode: 0o755 });
  await Deno.chmod(`${baseDir}/n1`, 0o755);
  const cluster = new NovactlCluster({ baseDir, env: { NOVACTL_LOG_LEVEL: "debug" } });
  const work = await Deno.makeTempDir({ prefix: "novactl-hardening-work-" });
  try {
    await cluster.start(1);
    const n1 = cluster.nodes[0];
    const admin = cluster.adminToken;
    const as = async (token: string, ...args: string[]): Promise<Outcome> => {
      const r = await cli([...args, "--server", n1.url, "--token", token]);
      return { code: r.code, stdout: r.stdout, error: r.stderr };
    };
    const ok = async (token: string, ...args: string[]): Promise<string> => {
      const r = await as(token, ...args);
      assertEquals(r.code, 0, `novactl ${args.join(" ")}: ${r.error}`);
      return r.stdout;
    };
    const json = async <T>(token: string, ...args: string[]) =>
      JSON.parse(await ok(token, ...args, "-o", "json")) as T;
    const commitIndex = async () => (await cluster.status()).commitIndex;
    /** The commands in entries (after, upTo] of n1's Raft log (WAL: a reader blocks no one). */
    const loggedBetween = (after: number, upTo: number): string[] => {
      const db = new DatabaseSync(`${n1.dataDir}/raft.db`, { readOnly: true });
      try {
        return db.prepare("SELECT data FROM entries WHERE type = 'normal' AND idx > ? AND idx <= ?")
          .all(after, upTo).map((r) => String(r.data));
      } finally {
        db.close();
      }
    };
    const imageNames = async () =>
      (await json<{ images: { name: string }[] }>(admin, "image", "list")).images.map((i) =>
        i.name
      );
    /** Files in the node's blob store: stored blobs and any partial upload. */
    const blobFiles = async () => {
      const names: string[] = [];
      for await (const e of Deno.readDir(`${n1.dataDir}/blobs`)) names.push(e.name);
      return names.sort();
    };

    const kernel = `${work}/vmlinuz`;
    await Deno.writeFile(kernel, crypto.getRandomValues(new Uint8Array(4096)));
    await ok(admin, "image", "import", "tiny", "--kernel", kernel);

    await step(t, "labels beyond the caps never reach the Raft log", async () => {
      const labels = (n: number, size: number) =>
        Object.fromEntries(Array.from({ length: n }, (_, i) => [`label${i}`, "v".repeat(size)]));
      const create = (l: Record<string, string>) =>
        requestJson<ErrorBody>(`${n1.url}/api/v1/vms`, {
          token: admin,
          body: { name: "big", image: "tiny", start: false, labels: l },
          timeoutMs: 30_000,
        });
      const before = await commitIndex();
      // The review's 5.6 MB: refused before it is even parsed (the 1 MiB body cap).
      const huge = await create(labels(22_000, 250));
      assert(huge.status === 413 || huge.status === 400, `5.6 MB of labels → ${huge.status}`);
      // 0.9 MB fits the body cap: refused by the label caps, naming the field.
      const big = await create(labels(3_500, 250));
      assertEquals(big.status, 400, JSON.stringify(big.body).slice(0, 300));
      assertEquals(big.body!.error.details?.fields?.map((f) => f.field), ["labels"]);
      assert(big.body!.error.message.includes("at most 64 labels"), big.body!.error.message);
      const badKey = await create({ "no spaces please": "v" });
      assertEquals(badKey.status, 400);
      // The refusals themselves are audited; nothing else may have entered the log.
      const logged = loggedBetween(before, await commitIndex());
      const ops = logged.map((d) => (JSON.parse(d) as { op?: string }).op);
      assertEquals(ops.filter((op) => op !== "audit.append"), [], "only audit records logged");
      const bytes = logged.reduce((n, d) => n + d.length, 0);
      assert(bytes < 64 << 10, `${bytes} bytes logged: label bytes reached the log`);
      assertEquals((await as(admin, "vm", "show", "big")).code, 1, "no VM was created");
    });

    await step(t, "a qcow2 whose backing file is a host path is refused", async () => {
      const evil = `${work}/x.qcow2`;
      await qemuImg("create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", evil, "1M");
      const before = await blobFiles();
      const r = await as(admin, "image", "import", "evil", "--disk", evil);
      assertEquals(r.code, 1);
      assert(/backing file/.test(r.error), r.error);
      assert(!(await imageNames()).includes("evil"), "no image registered");
      assertEquals(await blobFiles(), before, "nothing kept in the blob store");
    });

    await step(t, "an upload over images.maxUploadBytes gets 413 and leaves no file", async () => {
      await ok(admin, "config", "set", "images.maxUploadBytes", String(1 << 20));
      const big = `${work}/big.qcow2`;
      await qemuImg("create", "-q", "-f", "qcow2", "-o", "preallocation=full", big, "3M");
      assert((await Deno.stat(big)).size > 1 << 20);
      const before = await blobFiles();
      const r = await as(admin, "image", "import", "big", "--disk", big);
      assertEquals(r.code, 1);
      assert(/larger than 1048576 bytes/.test(r.error), r.error);
      assert(!(await imageNames()).includes("big"), "no image registered");
      assertEquals(await blobFiles(), before, "no partial upload left behind");
      // The same file under a raised cap goes through: the limit, not the file, refused it.
      await ok(admin, "config", "set", "images.maxUploadBytes", String(64 << 20));
      await ok(admin, "image", "import", "big", "--disk", big);
      assert((await imageNames()).includes("big"));
    });

    await step(t, "viewers and operators never see the cloud-init secrets", async () => {
      const hash = "$6$hardening$k1aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
      const marker = "hardening-user-data-secret-42";
      const userData = `${work}/user-data`;
      await Deno.writeTextFile(userData, `#cloud-config\nruncmd: [echo ${marker}]\n`);
      const tokenOf = async (name: string, role: string) =>
        (await ok(admin, "token", "create", name, "--role", role)).trim().split("\n").at(-1)!;
      const viewer = await tokenOf("hv", "viewer");
      const operator = await tokenOf("ho", "operator");
      await ok(
        operator,
        "vm",
        "create",
        "ci",
        "--image",
        "tiny",
        "--no-start",
        "--user",
        "ops",
        "--password-hash",
        hash,
        "--user-data",
        userData,
      );
      for (const [role, token] of [["viewer", viewer], ["operator", operator]]) {
        const show = await json<{ cloudInit: Record<string, string> }>(token, "vm", "show", "ci");
        assertEquals(show.cloudInit.passwordHash, "[redacted]", role);
        assertEquals(show.cloudInit.userData, "[redacted]", role);
        assertEquals(show.cloudInit.user, "ops", role);
        for (
          const out of [
            await ok(token, "vm", "list", "-o", "json"),
            await ok(token, "vm", "show", "ci"),
          ]
        ) {
          assert(!out.includes(hash) && !out.includes(marker), `${role} saw a secret: ${out}`);
        }
      }
      const full = await json<{ cloudInit: Record<string, string> }>(admin, "vm", "show", "ci");
      assertEquals(full.cloudInit.passwordHash, hash, "admins see it");
      const logText = await Deno.readTextFile(n1.logPath);
      assert(logText.includes("node listening"), "the node's log is the one read");
      assert(!logText.includes(hash) && !logText.includes(marker), "secrets never logged");
    });

    await step(t, "the data dir is 0700 and its secrets 0600, also after a loosening", async () => {
      const dir = n1.dataDir;
      const secrets = ["state.db", "raft.db", "node.json", "admin.token"];
      const companions = async () => {
        const out: string[] = [];
        for await (const e of Deno.readDir(dir)) {
          if (/^(state|raft)\.db-(wal|shm)$/.test(e.name)) out.push(e.name);
        }
        return out;
      };
      const check = async (when: string) => {
        assertEquals(await modeOf(dir), 0o700, `${when}: data dir`);
        const wal = await companions();
        assert(wal.length > 0, `${when}: the databases are open in WAL mode`);
        for (const f of [...secrets, ...wal]) {
          assertEquals(await modeOf(`${dir}/${f}`), 0o600, `${when}: ${f}`);
        }
      };
      await check("first start on a 0755 dir");
      await cluster.stopNode("n1");
      await Deno.chmod(dir, 0o755);
      for (const f of secrets) await Deno.chmod(`${dir}/${f}`, 0o644);
      await cluster.restart("n1");
      await check("restart after chmod 0755/0644");
    });
  } finally {
    await cluster.stop();
    await Deno.remove(baseDir, { recursive: true }).catch(() => {});
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
