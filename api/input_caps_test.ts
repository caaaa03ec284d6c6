/**
 * Input caps through the real API app (createApp) over a real one-voter
 * leader, in-process: labels, names and cloud-init fields on the public
 * routes, peer commands on /internal/propose, streamed uploads (size cap,
 * unsafe qcow2), and cloud-init secrets shown to admins only. Every refusal
 * leaves the replicated state (the applied index) where it was.
 */
import { join } from "node:path";
import { createHash } from "node:crypto";
import { assert, assertEquals } from "../core/testing/assert.ts";
import type { BlobStore } from "../host/storage/mod.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { sanitizeOps: false, sanitizeResources: false, timeoutMs: 2 * MINUTE };

async function harness() {
  const { c, blobs, call, tokens } = await startTestApp();
  return { c, blobs, call, tokens, fieldsOf };
}

const labels = (n: number, value = "v") =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`label${i}`, value]));

testWithTimeout(
  { name: "API caps: labels, names and cloud-init on vm create", ...opts },
  async () => {
    const { c, call, tokens, fieldsOf } = await harness();
    try {
      const applied = c.node.fsm.appliedIndex();
      const create = (body: Record<string, unknown>) =>
        call("POST", "/api/v1/vms", {
          token: tokens.operator,
          body: { name: "v1", image: "img", start: false, ...body },
        });
      const refused = async (body: Record<string, unknown>, fields: string[], says?: string) => {
        const r = await create(body);
        assertEquals([r.status, r.body.error?.code], [400, "validation"], JSON.stringify(r.body));
        assertEquals(fieldsOf(r), fields, r.body.error.message);
        if (says) assert(r.body.error.message.includes(says), r.body.error.message);
      };
      await refused({ labels: labels(65) }, ["labels"], "at most 64 labels");
      await refused({ labels: labels(64, "v".repeat(253)) }, ["labels"], "bytes");
      await refused({ labels: { "bad key!": "v" } }, ["labels.bad key!"], "key name");
      await refused({ labels: { "Upper.Prefix/x": "v" } }, ["labels.Upper.Prefix/x"], "prefix");
      await refused({ labels: { k: "v".repeat(254) } }, ["labels.k"], "253");
      await refused({ labels: { k: "a\u0000b" } }, ["labels.k"], "control");
      await refused({ node: "n".repeat(64) }, ["node"]);
      await refused({ group: "g".repeat(64) }, ["group"]);
      await refused({ image: "i".repeat(64) }, ["image"]);
      await refused({ cloudInit: { user: "u", userData: "#!" + "x".repeat(64 * 1024) } }, [
        "cloudInit.userData",
      ]);
      await refused({ cloudInit: { user: "u", passwordHash: "$6$" + "x".repeat(600) } }, [
        "cloudInit.passwordHash",
      ]);
      await refused({ cloudInit: { user: "u", sshKeys: ["ssh-ed25519 " + "A".repeat(9000)] } }, [
        "cloudInit.sshKeys.0",
      ]);
      // Nearly 1 MiB of labels (under the body cap): 400, not into the log.
      const big = await create({ labels: labels(3_000, "v".repeat(250)) });
      assertEquals(big.status, 400);
      assertEquals(c.node.fsm.appliedIndex(), applied, "nothing refused reached the log");

      const ok = await create({ labels: { "example.com/tier": "front end", zone: "a=b" } });
      assertEquals(ok.status, 201, JSON.stringify(ok.body));
    } finally {
      await c.stop();
    }
  },
);

testWithTimeout({ name: "API caps: /internal/propose checks peer commands", ...opts }, async () => {
  const { c, call, fieldsOf } = await harness();
  try {
    // As the listener reports a member's verified signature (api/server.ts).
    const env = {
      remoteAddr: "127.0.0.1",
      insecure: false,
      tlsPeer: {
        authorized: true,
        commonName: "n1",
        fingerprint: c.node.fsm.memberCert("n1")!.fingerprint,
      },
    };
    const propose = (command: unknown) =>
      call("POST", "/internal/propose", { env, body: { command } });
    const applied = c.node.fsm.appliedIndex();
    const n1 = c.node.fsm.node("n1")!;
    const upsert = {
      op: "node.upsert",
      name: "n1",
      url: "http://127.0.0.1:1/n1",
      inventory: n1.inventory,
      labels: {},
      at: Date.now(),
    };
    // The review's 5.6 MB: refused before parsing; 0.9 MB: refused by the label caps.
    const huge = await propose({ ...upsert, labels: labels(22_000, "v".repeat(250)) });
    assertEquals(huge.status, 413, JSON.stringify(huge.body).slice(0, 300));
    const big = await propose({ ...upsert, labels: labels(3_500, "v".repeat(250)) });
    assertEquals(big.status, 400, JSON.stringify(big.body).slice(0, 300));
    assertEquals(fieldsOf(big), ["command.labels"]);
    const host = await propose({
      ...upsert,
      inventory: { ...n1.inventory, hostname: "h".repeat(300) },
    });
    assertEquals([host.status, fieldsOf(host)], [400, ["command.inventory.hostname"]]);
    const guest = await propose({
      op: "vm.observed",
      name: "x",
      node: "n1",
      state: "running",
      guest: { agent: "ok", interfaces: Array(33).fill({ name: "e", addresses: [] }) },
      at: 1,
    });
    assertEquals([guest.status, fieldsOf(guest)], [400, ["command.guest.interfaces"]]);
    const missing = await propose({ op: "vm.remove", name: "x", at: 1 });
    assertEquals([missing.status, fieldsOf(missing)], [400, ["command.node"]]);
    // What another host's QEMU has plugged is that host's to say.
    const spoofed = await propose({
      op: "vm.devices",
      name: "x",
      node: "n2",
      plugged: { disks: [], nics: [] },
      at: 1,
    });
    assertEquals(spoofed.status, 403, JSON.stringify(spoofed.body));
    const forbidden = await propose({ op: "apiToken.create", hash: "h", role: "admin" });
    assertEquals(forbidden.status, 403);
    assertEquals(c.node.fsm.appliedIndex(), applied, "nothing refused reached the log");
    const fine = await propose({ ...upsert, labels: { zone: "a" } });
    assertEquals(fine.status, 200, JSON.stringify(fine.body));
    assertEquals(c.node.fsm.node("n1")!.labels, { zone: "a" });
  } finally {
    await c.stop();
  }
});

testWithTimeout({ name: "API: cloud-init secrets are shown to admins only", ...opts }, async () => {
  const { c, call, tokens } = await harness();
  try {
    const hash = "$6$salt$abcdefghijklmnop";
    const userData = "#cloud-config\nruncmd: [echo s3cret]\n";
    const created = await call("POST", "/api/v1/vms", {
      token: tokens.operator,
      body: {
        name: "ci",
        image: "img",
        start: false,
        cloudInit: {
          user: "ops",
          sshKeys: ["ssh-ed25519 AAAAC3Nz me@x"],
          passwordHash: hash,
          userData,
        },
      },
    });
    assertEquals(created.status, 201, JSON.stringify(created.body));
    assertEquals(
      created.body.cloudInit.passwordHash,
      "[redacted]",
      "not even in the create answer",
    );
    for (const role of ["operator", "viewer"] as const) {
      const token = tokens[role];
      for (
        const r of [
          await call("GET", "/api/v1/vms/ci", { token }),
          await call("GET", "/api/v1/vms/ci/wait?state=stopped&timeoutMs=1000", { token }),
        ]
      ) {
        assertEquals(r.body.cloudInit, {
          user: "ops",
          sshKeys: ["ssh-ed25519 AAAAC3Nz me@x"],
          passwordHash: "[redacted]",
          userData: "[redacted]",
        }, role);
      }
      const list = await call("GET", "/api/v1/vms", { token });
      const text = JSON.stringify(list.body);
      assert(!text.includes(hash) && !text.includes("s3cret"), `${role} list: ${text}`);
      const stopped = await call("POST", "/api/v1/vms/ci/stop", { token: tokens.operator });
      assert(!JSON.stringify(stopped.body).includes(hash));
    }
    const admin = await call("GET", "/api/v1/vms/ci", { token: tokens.admin });
    assertEquals(admin.body.cloudInit.passwordHash, hash);
    assertEquals(admin.body.cloudInit.userData, userData);
    // The record itself keeps the secrets: the host needs them for the seed.
    assertEquals(c.node.fsm.vm("ci")!.cloudInit!.passwordHash, hash);
  } finally {
    await c.stop();
  }
});

async function qemuImg(...args: string[]): Promise<void> {
  const out = await new Deno.Command("qemu-img", { args, stdout: "null", stderr: "piped" })
    .output();
  assert(out.success, new TextDecoder().decode(out.stderr));
}

function sha256(bytes: Uint8Array): Promise<string> {
  return Promise.resolve(createHash("sha256").update(bytes).digest("hex"));
}

/** Names in the blob store's dir: stored blobs and any temporary (partial) files. */
async function blobDirEntries(blobs: BlobStore): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(blobs.root)) names.push(e.name);
  return names.sort();
}

testWithTimeout({
  name: "API: uploads stop at images.maxUploadBytes; unsafe qcow2 refused",
  ...opts,
}, async () => {
  const { c, blobs, call, tokens, fieldsOf } = await harness();
  const work = await Deno.makeTempDir({ prefix: "novactl-upload-" });
  try {
    const token = tokens.operator;
    await c.patchConfig({ "images.maxUploadBytes": 1 << 20 });
    const big = crypto.getRandomValues(new Uint8Array(65536));
    const file = new Uint8Array((1 << 20) + 1);
    for (let off = 0; off < file.length; off += big.length) {
      file.set(big.subarray(0, file.length - off), off);
    }
    const sha = await sha256(file);
    // Streamed (no Content-Length): refused once past the cap, nothing left behind.
    const streamed = new Blob([file]).stream();
    const over = await call("PUT", `/api/v1/blobs/${sha}`, { token, raw: streamed });
    assertEquals(
      [over.status, over.body.error.code],
      [413, "too_large"],
      JSON.stringify(over.body),
    );
    assertEquals(await blobDirEntries(blobs), []);
    // Declared too large: refused before reading.
    const declared = await call("PUT", `/api/v1/blobs/${sha}`, {
      token,
      raw: file,
      headers: { "content-length": String(file.length) },
    });
    assertEquals(declared.status, 413);
    assertEquals(await blobDirEntries(blobs), []);
    // At the cap exactly: stored.
    const atCap = file.subarray(0, 1 << 20);
    const stored = await call("PUT", `/api/v1/blobs/${await sha256(atCap)}`, { token, raw: atCap });
    assertEquals(stored.status, 201, JSON.stringify(stored.body));

    // A qcow2 whose backing file is a host path: refused, with or without ?format=qcow2.
    const backed = join(work, "x.qcow2");
    await qemuImg("create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", backed, "1M");
    const bytes = await Deno.readFile(backed);
    for (const q of ["?format=qcow2", ""]) {
      const r = await call("PUT", `/api/v1/blobs/${await sha256(bytes)}${q}`, {
        token,
        raw: bytes,
      });
      assertEquals([r.status, fieldsOf(r)], [400, ["disk"]], JSON.stringify(r.body));
      assert(r.body.error.message.includes("backing file"), r.body.error.message);
    }
    assertEquals(await blobDirEntries(blobs), [await sha256(atCap)], "only the good blob");
    const good = join(work, "ok.qcow2");
    await qemuImg("create", "-q", "-f", "qcow2", good, "2M");
    const goodBytes = await Deno.readFile(good);
    const ok = await call("PUT", `/api/v1/blobs/${await sha256(goodBytes)}?format=qcow2`, {
      token,
      raw: goodBytes,
    });
    assertEquals([ok.status, ok.body.virtualBytes], [201, 2 << 20], JSON.stringify(ok.body));
  } finally {
    await c.stop();
    await Deno.remove(work, { recursive: true });
  }
});
