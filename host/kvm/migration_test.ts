import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { NovaError } from "../../core/errors/mod.ts";
import { type Display, QemuDriver, type QemuVm } from "./qemu.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import {
  cancelMirrors,
  exportDisksForMirror,
  listenForMigration,
  listeningTcpPorts,
  migrateMemory,
  mirrorDisks,
  setUpIncomingTls,
  setUpOutgoingTls,
} from "./migration.ts";
import { migrate, migrateSetParameters, queryMigrate } from "./commands.ts";
import { makeCa, makeNodeCert, type TestCa } from "./test_pki.ts";
import { type NodeTlsPaths, nodeTlsPaths } from "./tls.ts";

/** Connects to `host:port` and closes: proves something listens there. */
async function accepts(host: string, port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: host, port })).close();
    return true;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { ok: o.success, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

/**
 * The cluster: CA "cluster" with nodes n1 (source) and n2 (destination) and a stranger it also
 * signed ("intruder": right CA, not a member being admitted); and a foreign CA that signed a
 * certificate with n1's very name. Certificates name 127.0.0.1 and 127.0.0.2.
 */
interface Pki {
  ca: TestCa;
  n1: NodeTlsPaths;
  n2: NodeTlsPaths;
  intruder: NodeTlsPaths;
  /**
   * Foreign CA's "n1" certificate. It trusts the cluster CA too (QEMU checks its own certificate
   * against its CA file, and it must accept the peer's), so only the peer can refuse it.
   */
  forged: NodeTlsPaths;
}

async function makePki(dir: string): Promise<Pki> {
  const ips = ["127.0.0.1", "127.0.0.2"];
  const ca = await makeCa(`${dir}/ca`, "novactl cluster CA");
  const foreign = await makeCa(`${dir}/foreign-ca`, "novactl cluster CA");
  return {
    ca,
    n1: await makeNodeCert(`${dir}/n1`, ca, "n1", { ips }),
    n2: await makeNodeCert(`${dir}/n2`, ca, "n2", { ips }),
    intruder: await makeNodeCert(`${dir}/intruder`, ca, "intruder", { ips }),
    forged: await makeNodeCert(`${dir}/forged`, foreign, "n1", { ips, trust: [foreign, ca] }),
  };
}

/** Two QEMUs in `dir` (on tmpfs: migration fails with images on this machine's ext4). */
async function tmpfsDir(prefix: string): Promise<string> {
  return await Deno.makeTempDir({ dir: "/dev/shm", prefix });
}

async function qemuImg(...args: string[]): Promise<void> {
  const r = await run("qemu-img", args);
  assert(r.ok, `qemu-img ${args.join(" ")}: ${r.out}`);
}

/** A QEMU with one 16 MiB qcow2 disk "root"; incoming: waiting for a migration. */
async function launch(
  driver: QemuDriver,
  name: string,
  disk: string,
  incoming: boolean,
  display?: Display,
): Promise<QemuVm> {
  return await driver.launch({
    name,
    uuid: "6a1c3f4e-2b7d-4c55-9f0e-1d2c3b4a5968",
    cpus: 1,
    memoryMiB: 64,
    accel: "tcg",
    disks: [{ id: "root", path: disk, format: "qcow2" }],
    nics: [],
    generation: 0,
    // A destination has this version's consoles (serial socket, VNC); the source has the
    // older serial file: neither is guest state, and the two migrate.
    ...(incoming ? { incoming: "defer", consoles: true } : {}),
    ...(display ? { display } : {}),
  });
}

const never = new AbortController().signal;

/** A destination QEMU listening for migration and NBD on `host` (TLS; only n1 admitted). */
async function destination(dir: string, pki: Pki, host = "127.0.0.1", display?: Display) {
  await qemuImg("create", "-q", "-f", "qcow2", `${dir}/dest.qcow2`, "16M");
  const driver = await new QemuDriver(`${dir}/d`).init();
  const qemu = await launch(driver, "v", `${dir}/dest.qcow2`, true, display);
  try {
    const tls = await setUpIncomingTls(qemu, pki.n2, ["n1"]);
    const nbdPort = await exportDisksForMirror(qemu, host, ["root"], tls);
    const migrationPort = await listenForMigration(qemu, host, tls);
    return { qemu, nbdPort, migrationPort };
  } catch (err) {
    // A QEMU left behind keeps the test runner's lock file open (it inherits the descriptor).
    await qemu.kill();
    throw err;
  }
}

/** A running source QEMU whose disk starts with 1 MiB of 0xab. */
async function source(dir: string, name = "s", display?: Display): Promise<QemuVm> {
  const disk = `${dir}/${name}.qcow2`;
  await qemuImg("create", "-q", "-f", "qcow2", disk, "16M");
  const w = await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0xab 0 1M", disk]);
  assert(w.ok, w.out);
  const qemu = await launch(
    await new QemuDriver(`${dir}/${name}`).init(),
    "v",
    disk,
    false,
    display,
  );
  await qemu.cont();
  return qemu;
}

/** `qemu-img info` of the destination's NBD export "root", as a client with `creds` (or plain). */
function nbdInfo(port: number, credsDir: string | null, host = "127.0.0.1") {
  if (!credsDir) return run("qemu-img", ["info", `nbd://${host}:${port}/root`]);
  return run("qemu-img", [
    "info",
    "--object",
    // As novactl loads node certificates (commands.ts): ECDSA keys are for signatures only.
    `tls-creds-x509,id=tls0,dir=${credsDir},endpoint=client,sanity-check=off`,
    "--image-opts",
    `driver=nbd,host=${host},port=${port},export=root,tls-creds=tls0`,
  ]);
}

/** A QEMU-layout client credentials dir from a node's files (qemu-img runs as us). */
async function clientCreds(dir: string, paths: NodeTlsPaths): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.copyFile(paths.caCert, `${dir}/ca-cert.pem`);
  await Deno.copyFile(paths.cert, `${dir}/client-cert.pem`);
  await Deno.copyFile(paths.key, `${dir}/client-key.pem`);
  return dir;
}

testWithTimeout({
  name: "an incoming QEMU binds NBD and migration on the advertised address only, ports read back",
  timeoutMs: MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await tmpfsDir("novactl-incoming-");
  const pki = await makePki(`${dir}/pki`);
  await qemuImg("create", "-q", "-f", "qcow2", `${dir}/root.qcow2`, "16M");
  const qemu = await launch(
    await new QemuDriver(`${dir}/h`).init(),
    "v",
    `${dir}/root.qcow2`,
    true,
  );
  try {
    assertEquals(await listeningTcpPorts(qemu.pid), new Set(), "no TCP listener before");
    const tls = await setUpIncomingTls(qemu, pki.n2, ["n1"]);
    // 127.0.0.2 stands for the advertised address: a wildcard bind would also answer on 127.0.0.1.
    const nbdPort = await exportDisksForMirror(qemu, "127.0.0.2", ["root"], tls);
    const migrationPort = await listenForMigration(qemu, "127.0.0.2", tls);
    assert(nbdPort > 0 && migrationPort > 0 && nbdPort !== migrationPort, `${nbdPort}`);
    assertEquals(await listeningTcpPorts(qemu.pid), new Set([nbdPort, migrationPort]));
    // Connect to the NBD port only: a connection to the migration port starts the migration.
    assert(await accepts("127.0.0.2", nbdPort), `QEMU's NBD server accepts on ${nbdPort}`);
    assert(!(await accepts("127.0.0.1", nbdPort)), "NBD is not bound to every address");
    await assertRejects(() => exportDisksForMirror(qemu, "0.0.0.0", ["root"], tls), NovaError);
  } finally {
    await qemu.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "live migration with a local disk mirrored over NBD runs over TLS between two QEMUs",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await tmpfsDir("novactl-mig-tls-");
  const pki = await makePki(`${dir}/pki`);
  const dest = await destination(dir, pki);
  const src = await source(dir);
  try {
    const creds = await setUpOutgoingTls(src, pki.n1);
    const to = { host: "127.0.0.1", port: dest.nbdPort };
    await mirrorDisks(src, to, ["root"], creds, () => {}, never);
    const result = await migrateMemory(
      src,
      { host: "127.0.0.1", port: dest.migrationPort },
      creds,
      { downtimeLimitMs: 300, timeoutMs: 60_000 },
      () => {},
      never,
    );
    await cancelMirrors(src, ["root"]);
    assert(result.transferredBytes > 0, JSON.stringify(result));
    // The destination holds the guest now (paused, as every QEMU novactl starts) and runs it.
    let status = "inmigrate";
    for (let i = 0; i < 200 && status === "inmigrate"; i++) {
      status = await dest.qemu.status();
      if (status === "inmigrate") await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(status, "paused");
    await dest.qemu.cont();
    assertEquals(await dest.qemu.status(), "running");
    await dest.qemu.kill();
    const check = await run("qemu-io", [
      "-f",
      "qcow2",
      "-c",
      "read -P 0xab 0 1M",
      `${dir}/dest.qcow2`,
    ]);
    assert(check.ok && !check.out.includes("Pattern verification failed"), check.out);
  } finally {
    await src.kill();
    await dest.qemu.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "a destination refuses a migration stream without the right certificate",
  timeoutMs: 3 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const dir = await tmpfsDir("novactl-mig-refuse-");
  const pki = await makePki(`${dir}/pki`);
  const dest = await destination(dir, pki);
  const to = { host: "127.0.0.1", port: dest.migrationPort };
  const opts = { downtimeLimitMs: 300, timeoutMs: 30_000 };
  try {
    const cases: [string, NodeTlsPaths | null][] = [
      ["plain TCP, no TLS", null],
      ["a certificate with n1's name from another CA", pki.forged],
      ["a certificate of the cluster CA for a node not admitted", pki.intruder],
    ];
    for (const [what, paths] of cases) {
      await t.step(what, async () => {
        const src = await source(dir, `s-${cases.findIndex((c) => c[0] === what)}`);
        try {
          if (paths) {
            const creds = await setUpOutgoingTls(src, paths);
            await assertRejects(() => migrateMemory(src, to, creds, opts, () => {}, never));
          } else {
            await migrateSetParameters(src.qmp, { "tls-creds": "" });
            await migrate(src.qmp, to);
            let status = "";
            for (let i = 0; i < 600 && !["failed", "completed"].includes(status); i++) {
              status = (await queryMigrate(src.qmp)).status ?? "";
              await new Promise((r) => setTimeout(r, 50));
            }
            assertEquals(status, "failed", "a plain stream is not accepted");
          }
          assertEquals(await src.status(), "running", "the guest stays on the source");
        } finally {
          await src.kill();
        }
      });
    }
    await t.step("the right certificate still gets in afterwards", async () => {
      assert(dest.qemu.alive(), "the refusals did not end the destination");
      assertEquals(await dest.qemu.status(), "inmigrate");
      const src = await source(dir, "good");
      try {
        const creds = await setUpOutgoingTls(src, pki.n1);
        const r = await migrateMemory(src, to, creds, opts, () => {}, never);
        assert(r.transferredBytes > 0);
      } finally {
        await src.kill();
      }
    });
  } finally {
    await dest.qemu.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "an NBD export serves only clients with an admitted certificate of the cluster CA",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await tmpfsDir("novactl-nbd-tls-");
  const pki = await makePki(`${dir}/pki`);
  const dest = await destination(dir, pki);
  try {
    const plain = await nbdInfo(dest.nbdPort, null);
    assert(!plain.ok, `a client without TLS is refused: ${plain.out}`);
    const forged = await nbdInfo(dest.nbdPort, await clientCreds(`${dir}/c-forged`, pki.forged));
    assert(!forged.ok, `a certificate from another CA is refused: ${forged.out}`);
    const intruder = await nbdInfo(
      dest.nbdPort,
      await clientCreds(`${dir}/c-intruder`, pki.intruder),
    );
    assert(!intruder.ok, `a cluster certificate not admitted is refused: ${intruder.out}`);
    const good = await nbdInfo(dest.nbdPort, await clientCreds(`${dir}/c-n1`, pki.n1));
    assert(good.ok, `the source node's certificate gets in: ${good.out}`);
    assert(good.out.includes("virtual size: 16 MiB"), good.out);
  } finally {
    await dest.qemu.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "without the node's certificate files nothing is set up for plain-text migration",
  timeoutMs: MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await tmpfsDir("novactl-no-certs-");
  await qemuImg("create", "-q", "-f", "qcow2", `${dir}/root.qcow2`, "16M");
  const qemu = await launch(
    await new QemuDriver(`${dir}/h`).init(),
    "v",
    `${dir}/root.qcow2`,
    true,
  );
  try {
    const err = await assertRejects(
      () => setUpIncomingTls(qemu, nodeTlsPaths(`${dir}/empty`), ["n1"]),
      NovaError,
    );
    assertEquals(err.code, "precondition_failed");
    assert(err.message.includes("plain text"), err.message);
    assertEquals(await listeningTcpPorts(qemu.pid), new Set(), "nothing listens");
  } finally {
    await qemu.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Live-migrates a source QEMU with display `from` into a destination launched with `to`
 * (undefined: the field absent, as in a launch spec written before displays); the destination's
 * status afterwards, or why the migration failed.
 */
async function migrateDisplay(
  from: Display | undefined,
  to: Display | undefined,
): Promise<{ status?: string; error?: string }> {
  const dir = await tmpfsDir("novactl-mig-display-");
  const pki = await makePki(`${dir}/pki`);
  const dest = await destination(dir, pki, "127.0.0.1", to);
  const src = await source(dir, "s", from);
  try {
    const creds = await setUpOutgoingTls(src, pki.n1);
    await mirrorDisks(
      src,
      { host: "127.0.0.1", port: dest.nbdPort },
      ["root"],
      creds,
      () => {},
      never,
    );
    try {
      await migrateMemory(
        src,
        { host: "127.0.0.1", port: dest.migrationPort },
        creds,
        { downtimeLimitMs: 300, timeoutMs: 60_000 },
        () => {},
        never,
      );
    } catch (err) {
      return { error: String(err) };
    }
    let status = "inmigrate";
    for (let i = 0; i < 200 && status === "inmigrate"; i++) {
      status = await dest.qemu.status().catch(() => "gone");
      if (status === "inmigrate") await new Promise((r) => setTimeout(r, 50));
    }
    return { status };
  } finally {
    await src.kill();
    await dest.qemu.kill().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

testWithTimeout({
  name:
    "display devices must match: VGA to VGA and none (absent) to none migrate; VGA to none does not",
  timeoutMs: 3 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  assertEquals(await migrateDisplay("vga", "vga"), { status: "paused" });
  // A QEMU launched before displays (no field) into a destination told "none".
  assertEquals(await migrateDisplay(undefined, "none"), { status: "paused" });
  // Why the destination must copy the source's choice: with another device set QEMU refuses.
  const mismatch = await migrateDisplay("vga", "none");
  assert(mismatch.error !== undefined || mismatch.status !== "paused", JSON.stringify(mismatch));
});
