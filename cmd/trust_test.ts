/**
 * Trust on first use (trust.ts) against real TLS servers on loopback, each with its own cluster
 * CA: a pinned CA is used without asking; `--ca-fingerprint` pins only on a match; without a
 * terminal nothing is pinned and the error names the fingerprint; a person's yes pins and a no
 * does not; a pinned CA from another cluster fails naming the pinned file and is never replaced.
 */
import { assert, assertEquals, assertRejects } from "../core/testing/assert.ts";
import {
  createCa,
  createNodeKeyAndCsr,
  fingerprint,
  type KeyPairPem,
  nodeSans,
  signCsr,
} from "../core/pki/mod.ts";
import { fetchUntrustedCa } from "../core/cluster/bootstrap.ts";
import { exitCodeOf, NovaError } from "../core/errors/mod.ts";
import { ApiClient } from "./client.ts";
import {
  parseFingerprint,
  pinnedCaPath,
  resolveCa,
  serverOrigin,
  type TrustDeps,
  trustRemote,
} from "./trust.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

/**
 * An HTTPS server with a certificate from `ca`, serving a CA PEM (`ca`'s own unless `served`)
 * and a tiny API.
 */
async function tlsServer(ca: KeyPairPem, served = ca.certPem) {
  const { keyPem, csrPem } = await createNodeKeyAndCsr("n1", nodeSans("127.0.0.1"));
  const cert = await signCsr(ca, csrPem, { name: "n1", sans: nodeSans("127.0.0.1") });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert, key: keyPem, onListen: () => {} },
    (req) =>
      new URL(req.url).pathname === "/api/v1/cluster/ca"
        ? new Response(served)
        : Response.json({ vms: [] }),
  );
  return { url: `https://127.0.0.1:${server.addr.port}`, server };
}

/** Test doubles for the terminal, recording what was asked and fetched. */
function fakeDeps(configHome: string, tty: { interactive: boolean; answer?: boolean }) {
  const asked: string[] = [];
  const notices: string[] = [];
  let fetches = 0;
  const deps: TrustDeps = {
    fetchCa: (server) => {
      fetches++;
      return fetchUntrustedCa(server);
    },
    interactive: () => tty.interactive,
    confirm: (q) => {
      asked.push(q);
      return Promise.resolve(tty.answer ?? false);
    },
    notice: (line) => void notices.push(line),
    env: (name) => name === "XDG_CONFIG_HOME" ? configHome : undefined,
  };
  return { deps, asked, notices, fetches: () => fetches };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const opts = { sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  { name: "trust: first use, fingerprints and pins", timeoutMs: MINUTE, ...opts },
  async (t) => {
    const caA = await createCa("cluster-a");
    const caB = await createCa("cluster-b");
    const fpA = fingerprint(caA.certPem);
    const fpB = fingerprint(caB.certPem);
    const a = await tlsServer(caA);
    const b = await tlsServer(caB);
    const home = await Deno.makeTempDir();
    try {
      const pinA = pinnedCaPath(a.url, (n) => n === "XDG_CONFIG_HOME" ? home : undefined);

      await t.step(
        "the pin file is per host and port under XDG_CONFIG_HOME, else ~/.config",
        () => {
          const port = new URL(a.url).port;
          assertEquals(pinA, `${home}/novactl/servers/127.0.0.1_${port}.crt`);
          assertEquals(
            pinnedCaPath("https://[::1]:7070", (n) => n === "HOME" ? "/home/op" : undefined),
            "/home/op/.config/novactl/servers/--1_7070.crt",
          );
          assertEquals(serverOrigin("https://example.org/"), "https://example.org:443");
          assertEquals(parseFingerprint(`SHA256:${fpA.toUpperCase()}`), fpA);
        },
      );

      await t.step("plain http needs no CA", async () => {
        const f = fakeDeps(home, { interactive: false });
        assertEquals(await resolveCa({ server: "http://127.0.0.1:1" }, f.deps), undefined);
        assertEquals(f.fetches(), 0);
      });

      await t.step("no terminal: exit 1 naming the fingerprint, nothing pinned", async () => {
        const f = fakeDeps(home, { interactive: false, answer: true });
        const err = await assertRejects(() => resolveCa({ server: a.url }, f.deps), NovaError);
        assertEquals(exitCodeOf(err.code), 1);
        assert(err.message.includes(fpA), err.message);
        assert(err.message.includes("--ca-fingerprint") && err.message.includes("--ca "));
        assertEquals(err.message.includes("\n"), false);
        assertEquals(f.asked, []);
        assertEquals(await exists(pinA), false);
      });

      await t.step("a wrong --ca-fingerprint pins nothing, naming both fingerprints", async () => {
        const f = fakeDeps(home, { interactive: true, answer: true });
        const err = await assertRejects(
          () => resolveCa({ server: a.url, caFingerprint: fpB }, f.deps),
          NovaError,
        );
        assertEquals(exitCodeOf(err.code), 1);
        assert(err.message.includes(fpA) && err.message.includes(fpB), err.message);
        assertEquals(f.asked, [], "a fingerprint given is the answer: no question");
        assertEquals(await exists(pinA), false);
      });

      await t.step("a person's no pins nothing; the question names the server", async () => {
        const f = fakeDeps(home, { interactive: true, answer: false });
        await assertRejects(() => resolveCa({ server: a.url }, f.deps), new RegExp(fpA));
        assertEquals(f.asked, [`Trust this cluster CA for ${serverOrigin(a.url)}? [y/N] `]);
        assert(f.notices.some((n) => n.includes(fpA)), "the fingerprint is shown before asking");
        assertEquals(await exists(pinA), false);
      });

      await t.step(
        "the right --ca-fingerprint pins (0600 in a 0700 dir) and the request works",
        async () => {
          const f = fakeDeps(home, { interactive: false });
          const client = new ApiClient({ server: a.url, caFingerprint: fpA, trust: f.deps });
          assertEquals(await client.get("/api/v1/vms"), { vms: [] });
          assertEquals(await Deno.readTextFile(pinA), caA.certPem);
          assertEquals((await Deno.stat(pinA)).mode! & 0o777, 0o600);
          assertEquals((await Deno.stat(`${home}/novactl/servers`)).mode! & 0o777, 0o700);
        },
      );

      await t.step("once pinned: no fetch, no question, no flag", async () => {
        const f = fakeDeps(home, { interactive: true, answer: false });
        assertEquals(await resolveCa({ server: a.url }, f.deps), { file: pinA, source: "pinned" });
        const client = new ApiClient({ server: a.url, trust: f.deps });
        assertEquals(await client.get("/api/v1/vms"), { vms: [] });
        assertEquals([f.fetches(), f.asked.length], [0, 0]);
      });

      await t.step("a --ca-fingerprint other than the pinned CA's is refused", async () => {
        const f = fakeDeps(home, { interactive: false });
        await assertRejects(
          () => resolveCa({ server: a.url, caFingerprint: fpB }, f.deps),
          new RegExp(`${pinA}.*${fpA}.*${fpB}`),
        );
      });

      await t.step(
        "a pinned CA from another cluster: the error names the pinned file",
        async () => {
          // The CA of cluster A pinned for B's address: B's certificate does not verify.
          const pinB = pinnedCaPath(b.url, (n) => n === "XDG_CONFIG_HOME" ? home : undefined);
          await Deno.writeTextFile(pinB, caA.certPem);
          const f = fakeDeps(home, { interactive: true, answer: true });
          const client = new ApiClient({ server: b.url, trust: f.deps });
          const err = await assertRejects(() => client.get("/api/v1/vms"), NovaError);
          assertEquals(exitCodeOf(err.code), 1);
          assert(err.message.includes(pinB), err.message);
          assertEquals([f.fetches(), f.asked.length], [0, 0], "never re-trusted on the quiet");
          assertEquals(await Deno.readTextFile(pinB), caA.certPem);
          // `remote trust` does not replace it either, even with --yes.
          await assertRejects(
            () => trustRemote({ server: b.url, yes: true }, f.deps),
            new RegExp(`${pinB} already pins another CA \\(${fpA}\\).*${fpB}`),
          );
          await Deno.remove(pinB);
        },
      );

      await t.step(
        "a server serving a CA that did not sign its certificate: nothing pinned",
        async () => {
          // Someone in between with its own certificate, handing out cluster A's real CA.
          const mitm = await tlsServer(caB, caA.certPem);
          try {
            const f = fakeDeps(home, { interactive: false });
            const pin = pinnedCaPath(mitm.url, f.deps.env);
            await assertRejects(
              () => resolveCa({ server: mitm.url, caFingerprint: fpA }, f.deps),
              /does not verify its own certificate; nothing pinned/,
            );
            await assertRejects(
              () => trustRemote({ server: mitm.url, yes: true }, f.deps),
              /does not verify its own certificate; nothing pinned/,
            );
            assertEquals(await exists(pin), false);
          } finally {
            await mitm.server.shutdown();
          }
        },
      );

      await t.step("a person's yes pins", async () => {
        const f = fakeDeps(home, { interactive: true, answer: true });
        const pinB = pinnedCaPath(b.url, f.deps.env);
        assertEquals(await resolveCa({ server: b.url }, f.deps), { file: pinB, source: "pinned" });
        assertEquals(f.asked.length, 1);
        assertEquals(await Deno.readTextFile(pinB), caB.certPem);
        await Deno.remove(pinB);
      });

      await t.step(
        "remote trust: --yes or a matching fingerprint pins; a wrong one does not",
        async () => {
          const f = fakeDeps(home, { interactive: false });
          const pinB = pinnedCaPath(b.url, f.deps.env);
          await assertRejects(() => trustRemote({ server: b.url }, f.deps), new RegExp(fpB));
          await assertRejects(
            () => trustRemote({ server: b.url, caFingerprint: fpA }, f.deps),
            new RegExp(`${fpB}.*${fpA}`),
          );
          assertEquals(await exists(pinB), false);
          const r = await trustRemote({ server: b.url, caFingerprint: fpB }, f.deps);
          assertEquals(r, {
            server: serverOrigin(b.url),
            fingerprint: fpB,
            file: pinB,
            alreadyPinned: false,
          });
          assertEquals(
            (await trustRemote({ server: b.url, yes: true }, f.deps)).alreadyPinned,
            true,
          );
          await Deno.remove(pinB);
          assertEquals((await trustRemote({ server: b.url, yes: true }, f.deps)).fingerprint, fpB);
        },
      );
    } finally {
      await a.server.shutdown();
      await b.server.shutdown();
      await Deno.remove(home, { recursive: true });
    }
  },
);
