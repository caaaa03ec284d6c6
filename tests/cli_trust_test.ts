/**
 * The CLI's trust on first use against a real one-node cluster over real TLS (issue 9 point 2).
 * The CLI runs as a subprocess WITHOUT NOVACTL_CA (which the harness would otherwise inject) and
 * without a terminal, with its own XDG_CONFIG_HOME: a wrong `--ca-fingerprint` pins nothing, no
 * flag fails naming the fingerprint, the right one works and pins, `remote trust --yes` pins, a
 * pinned CA then serves a plain `vm list`, and a CA from another cluster pinned for the address
 * fails naming the pinned file. The fingerprint is in the bootstrap log and `cluster status`.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { createCa, fingerprint } from "../core/pki/mod.ts";
import { step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI with only the caller's variables besides the basics: no NOVACTL_CA (what the
 * harness's runners inject), no NOVACTL_* from this process, stdin not a terminal.
 */
async function untrustedCli(args: string[], env: Record<string, string>): Promise<Run> {
  const inherited = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("NOVACTL_")),
  );
  const main = new URL("../main.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    clearEnv: true,
    env: { ...inherited, NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(2 * MINUTE),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The one error line a failed CLI run prints. */
function errorLine(r: Run): string {
  assertEquals(r.code, 1, r.stderr);
  const lines = r.stderr.trimEnd().split("\n");
  assertEquals(lines.length, 1, r.stderr);
  return lines[0];
}

testWithTimeout({
  name: "CLI trust on first use: fingerprint pinning against a real cluster",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster();
  const config = await Deno.makeTempDir({ prefix: "novactl-trust-config-" });
  try {
    await cluster.start(1);
    const [n1] = cluster.nodes;
    const caPem = await Deno.readTextFile(`${n1.dataDir}/ca.crt`);
    const fp = fingerprint(caPem);
    const other = fingerprint((await createCa("another-cluster")).certPem);
    const port = new URL(n1.url).port;
    const pin = `${config}/novactl/servers/127.0.0.1_${port}.crt`;
    const env = { XDG_CONFIG_HOME: config, NOVACTL_TOKEN: cluster.adminToken };
    const run = (...args: string[]) => untrustedCli([...args, "--server", n1.url], env);

    await step(t, "the bootstrap log line names the CA fingerprint", async () => {
      const boot = (await Deno.readTextFile(n1.logPath)).split("\n")
        .find((l) => l.includes("bootstrapped new cluster"));
      assert(boot?.includes(fp), boot);
    });

    await step(t, "a wrong --ca-fingerprint: exit 1 naming both, nothing pinned", async () => {
      const line = errorLine(await run("vm", "list", "--ca-fingerprint", other));
      assert(line.includes(fp) && line.includes(other), line);
      assertEquals(await exists(pin), false);
    });

    await step(
      t,
      "no flag and no terminal: exit 1 naming the fingerprint and the flags",
      async () => {
        const line = errorLine(await run("vm", "list"));
        assert(
          line.includes(fp) && line.includes("--ca-fingerprint") && line.includes("--ca "),
          line,
        );
        assertEquals(await exists(pin), false);
      },
    );

    await step(t, "the right --ca-fingerprint works and pins the CA (0600)", async () => {
      const r = await run("vm", "list", "-o", "json", "--ca-fingerprint", fp.toUpperCase());
      assertEquals(r.code, 0, r.stderr);
      JSON.parse(r.stdout);
      assertEquals(await Deno.readTextFile(pin), caPem);
      assertEquals((await Deno.stat(pin)).mode! & 0o777, 0o600);
    });

    await step(t, "remote trust --yes pins, printing the fingerprint and the file", async () => {
      await Deno.remove(pin);
      const r = await run("remote", "trust", "--yes", "-o", "json");
      assertEquals(r.code, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assertEquals([out.fingerprint, out.file, out.alreadyPinned], [fp, pin, false]);
      assertEquals(await Deno.readTextFile(pin), caPem);
    });

    await step(
      t,
      "pinned: a plain vm list needs no flag; cluster status shows the fingerprint",
      async () => {
        const plain = await untrustedCli(["vm", "list"], { ...env, NOVACTL_SERVER: n1.url });
        assertEquals(plain.code, 0, plain.stderr);
        assertEquals(plain.stderr, "");
        const status = await run("cluster", "status", "-o", "json");
        assertEquals(status.code, 0, status.stderr);
        assertEquals(JSON.parse(status.stdout).caFingerprint, fp);
      },
    );

    await step(
      t,
      "a CA from another cluster pinned for this address: error names the file",
      async () => {
        const foreign = (await createCa("another-cluster")).certPem;
        await Deno.writeTextFile(pin, foreign);
        const line = errorLine(await run("vm", "list"));
        assert(line.includes(pin), line);
        assertEquals(await Deno.readTextFile(pin), foreign, "never re-trusted on the quiet");
        const again = errorLine(await run("remote", "trust", "--yes"));
        assert(again.includes(pin) && again.includes(fp), again);
      },
    );
  } finally {
    await cluster.stop();
    await Deno.remove(config, { recursive: true });
  }
});
