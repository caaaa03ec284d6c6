/**
 * Running novactl as a service, as README "Install and run as a service" says: scripts/install.sh
 * into a scratch root, the installed launcher starting a real node from the config file alone,
 * systemd's readiness protocol over a real unix datagram socket, flags overriding the file, and
 * the unit as systemd-analyze reads it.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { VERSION } from "../core/version.ts";
import { parseNodeConfig } from "../cmd/node_config.ts";
import { ManagedProcess } from "../bench/lib/process.ts";
import { requestJson, tailFile, WaitAborted, waitFor } from "../bench/lib/util.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const opts = { sanitizeOps: false, sanitizeResources: false };

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<Output> {
  const o = await new Deno.Command(cmd, { args, env, stdin: "null", cwd: ROOT }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: o.code, stdout: text(o.stdout), stderr: text(o.stderr) };
}

async function install(root: string, ...args: string[]): Promise<Output> {
  const r = await run("bash", ["scripts/install.sh", "--root", root, ...args]);
  return r;
}

/** What systemd's manager would read from NOTIFY_SOCKET, each datagram one message. */
class NotifySocket {
  readonly messages: string[] = [];
  readonly #conn: Deno.DatagramConn;

  constructor(readonly path: string) {
    this.#conn = Deno.listenDatagram({ transport: "unixpacket", path });
    void this.#receive();
  }

  async #receive(): Promise<void> {
    try {
      for (;;) this.messages.push(new TextDecoder().decode((await this.#conn.receive())[0]));
    } catch { /* closed */ }
  }

  /** The first message from index `from` on with line `line`. */
  wait(line: string, from: number, node: ManagedProcess): Promise<number> {
    return waitFor(async () => {
      const i = this.messages.findIndex((m, i) => i >= from && m.split("\n").includes(line));
      if (i >= 0) return i;
      if (node.exited) throw new WaitAborted(`node exited:\n${await tailFile(node.logPath)}`);
    }, { timeoutMs: 2 * MINUTE, intervalMs: 50, description: `${line} on NOTIFY_SOCKET` });
  }

  close(): void {
    this.#conn.close();
  }
}

testWithTimeout({
  name: "service: the installed novactl runs a node from its config file and notifies systemd",
  timeoutMs: 6 * MINUTE,
  ...opts,
}, async () => {
  const root = await Deno.makeTempDir({ prefix: "novactl-service-" });
  const notify = new NotifySocket(`${root}/notify.sock`);
  let node: ManagedProcess | null = null;
  try {
    const installed = await install(root);
    assertEquals(installed.code, 0, installed.stderr);
    const novactl = `${root}/usr/local/bin/novactl`;
    const dataDir = `${root}/var/lib/novactl`;
    const config = `${root}/etc/novactl/node.yaml`;
    await Deno.writeTextFile(
      config,
      [
        "name: svc1",
        `data-dir: ${dataDir}`,
        "listen: 127.0.0.1:0",
        "insecure-http: true",
        "networking: off",
        "log-level: warn",
        "label: { rack: r1, zone: file }",
      ].join("\n") + "\n",
    );
    const start = async (...flags: string[]) => {
      node = await ManagedProcess.spawn({
        name: "svc1",
        command: novactl,
        args: ["node", "start", "--config", config, ...flags],
        logPath: `${root}/node.log`,
        env: { NOTIFY_SOCKET: notify.path },
      });
      return node;
    };
    const started = await start();

    // READY=1 means what /readyz means: it answers 200 the moment READY=1 arrives.
    const ready = await notify.wait("READY=1", 0, started);
    const url = JSON.parse(await Deno.readTextFile(`${dataDir}/listen.json`)).url as string;
    const readyz = await requestJson<{ ready: boolean }>(`${url}/readyz`);
    assertEquals([readyz.status, readyz.body?.ready], [200, true]);
    assert(notify.messages[ready].includes("STATUS=ready (leader svc1)"), notify.messages[ready]);
    assertEquals(notify.messages.slice(0, ready).filter((m) => m.includes("READY=1")), []);

    // Everything came from the file: the name, the data dir, the labels, the log level.
    const token = (await Deno.readTextFile(`${dataDir}/admin.token`)).trim();
    const shown = await requestJson<{ labels: Record<string, string> }>(
      `${url}/api/v1/nodes/svc1`,
      { token },
    );
    assertEquals(shown.body?.labels, { rack: "r1", zone: "file" });
    const quiet = await Deno.readTextFile(`${root}/node.log`);
    assert(!quiet.includes('"msg":"node listening"'), "log-level: warn hid the info lines");

    // The installed client against the node: both versions in one JSON document.
    const version = await run(novactl, [
      "version",
      "-o",
      "json",
      "--server",
      url,
      "--token",
      token,
    ]);
    assertEquals(version.code, 0, version.stderr);
    assertEquals(JSON.parse(version.stdout).client.version, VERSION);
    assertEquals(JSON.parse(version.stdout).server.version, VERSION);
    assertEquals(JSON.parse(version.stdout).server.node, "svc1");

    // systemctl stop: SIGTERM to the main process, STOPPING=1 back.
    const before = notify.messages.length;
    started.signal("SIGTERM");
    await notify.wait("STOPPING=1", before, started);
    assertEquals((await started.wait()).code, 0);

    // Flags override the file: a scalar (the log level) and one label key.
    const restarted = await start("--log-level", "info", "--label", "zone=cli");
    await notify.wait("READY=1", notify.messages.length, restarted);
    const labels = await waitFor(async () => {
      const r = await requestJson<{ labels: Record<string, string> }>(
        `${url}/api/v1/nodes/svc1`,
        { token },
      );
      return r.body?.labels.zone === "cli" ? r.body.labels : undefined;
    }, { timeoutMs: MINUTE, description: "the flag's label on svc1" });
    assertEquals(labels, { rack: "r1", zone: "cli" });
    const log = await Deno.readTextFile(`${root}/node.log`);
    assert(log.includes('"msg":"node listening"'), "--log-level info beat the file's warn");
  } finally {
    await (node as ManagedProcess | null)?.stop(15_000);
    notify.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});

/** `KEY=VALUE` lines of a unit file's [Service] section. */
function serviceSettings(unit: string): Map<string, string> {
  const section = unit.split(/^\[Service\]$/m)[1].split(/^\[/m)[0];
  const out = new Map<string, string>();
  for (const line of section.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1], m[2]);
  }
  return out;
}

testWithTimeout({
  name: "service: install.sh is idempotent, its unit verifies, --compile installs or says why not",
  timeoutMs: 5 * MINUTE,
  ...opts,
}, async () => {
  const root = await Deno.makeTempDir({ prefix: "novactl-install-" });
  try {
    assertEquals((await install(root)).code, 0);
    // The sample config is a valid one.
    const sample = parseNodeConfig(await Deno.readTextFile(`${root}/etc/novactl/node.yaml`), "s");
    assertEquals([sample["data-dir"], sample.listen], ["/var/lib/novactl", "0.0.0.0:7070"]);
    // A second run (here through DESTDIR) upgrades the program and keeps config and data.
    await Deno.writeTextFile(`${root}/etc/novactl/node.yaml`, "name: mine\n");
    await Deno.chmod(`${root}/var/lib/novactl`, 0o755);
    const again = await run("bash", ["scripts/install.sh"], { DESTDIR: root });
    assertEquals(again.code, 0, again.stderr);
    assertEquals(await Deno.readTextFile(`${root}/etc/novactl/node.yaml`), "name: mine\n");
    assertEquals((await Deno.stat(`${root}/var/lib/novactl`)).mode! & 0o777, 0o700);

    const novactl = `${root}/usr/local/bin/novactl`;
    const help = await run(novactl, ["--help"]);
    assertEquals(help.code, 0, help.stderr);
    assert(help.stdout.includes("version"), help.stdout);
    const version = await run(novactl, ["version", "--client"]);
    assertEquals([version.code, version.stdout], [0, `Client Version: ${VERSION}\n`]);

    // The unit as systemd reads it: the installed ExecStart exists, every setting parses.
    const unitText = await Deno.readTextFile(`${root}/etc/systemd/system/novactl.service`);
    const s = serviceSettings(unitText);
    assertEquals(s.get("Type"), "notify");
    assertEquals(s.get("KillMode"), "process");
    assertEquals(s.get("Restart"), "on-failure");
    assertEquals(s.get("EnvironmentFile"), "-/etc/default/novactl");
    assertEquals(s.get("TimeoutStartSec"), "infinity");
    assert(Number(s.get("LimitNOFILE")) >= 65536, s.get("LimitNOFILE"));
    assertEquals(
      s.get("ExecStart"),
      "/usr/local/bin/novactl node start --config /etc/novactl/node.yaml $NOVACTL_NODE_ARGS",
    );
    // systemd-analyze resolves the unit's dependencies (sysinit.target, ...) under --root.
    await Deno.mkdir(`${root}/usr/lib/systemd`, { recursive: true });
    const units = await run("cp", ["-R", "/usr/lib/systemd/system", `${root}/usr/lib/systemd/`]);
    assertEquals(units.code, 0, units.stderr);
    const verify = await run("systemd-analyze", [
      "verify",
      `--root=${root}`,
      "/etc/systemd/system/novactl.service",
    ]);
    // It exits 0 on a bad setting too, only warning: any output is a failure.
    assertEquals([verify.code, verify.stdout + verify.stderr], [0, ""]);

    // deno compile needs its runtime base binary (downloaded, or DENORT_BIN): where it cannot
    // have one, --compile fails saying so and leaves the installed launcher as it was.
    const compiled = await install(root, "--compile");
    if (compiled.code === 0) {
      const v = await run(novactl, ["version", "--client"]);
      assertEquals([v.code, v.stdout], [0, `Client Version: ${VERSION}\n`]);
    } else {
      assert(compiled.stderr.includes("deno compile failed"), compiled.stderr);
      const v = await run(novactl, ["version", "--client"]);
      assertEquals([v.code, v.stdout], [0, `Client Version: ${VERSION}\n`]);
    }
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});
