import { assert, assertEquals } from "../testing/assert.ts";
import { testWithTimeout } from "../../tests/support/timeout.ts";
import {
  createCa,
  createNodeKeyAndCsr,
  fingerprint,
  type KeyPairPem,
  signCsr,
} from "../pki/mod.ts";
import {
  PEER_CERT_HEADER,
  PEER_SIGNATURE_HEADER,
  ReplayGuard,
  RequestSigner,
  SignatureVerifier,
  UNSIGNED_BODY,
} from "./signature.ts";

const SELF = "https://127.0.0.1:7443";
const OTHER = "https://127.0.0.1:7444";

interface Member {
  certPem: string;
  keyPem: string;
  fp: string;
}

async function member(ca: KeyPairPem, name: string): Promise<Member> {
  const { keyPem, csrPem } = await createNodeKeyAndCsr(name, ["127.0.0.1"]);
  const certPem = await signCsr(ca, csrPem, { name, sans: ["127.0.0.1"] });
  return { certPem, keyPem, fp: fingerprint(certPem) };
}

/**
 * The receiving node n1 at SELF (and n4 at OTHER), and signers that trust the
 * cluster CA and learn receivers' certificates as a node does.
 */
async function setup() {
  const ca = await createCa("c1");
  const n1 = await member(ca, "n1");
  const n4 = await member(ca, "n4");
  const certOf = (origin: string) => Promise.resolve(origin === SELF ? n1.certPem : n4.certPem);
  const signerFor = (name: string, who: Member) =>
    new RequestSigner(name, { ...who, caPem: ca.certPem }, certOf);
  const verifier = new SignatureVerifier({ caPem: ca.certPem, keyPem: n1.keyPem }, SELF);
  return { ca, verifier, signerFor };
}

/** A request as the server sees it: signed for `signedUrl`, arriving at `url` with `sentBody`. */
async function signed(
  signer: RequestSigner,
  opts: { url?: string; signedUrl?: string; body?: string; sentBody?: string; method?: string } =
    {},
): Promise<Request> {
  const url = opts.url ?? `${SELF}/internal/raft?x=1`;
  const method = opts.method ?? "POST";
  const headers = await signer.headers(method, opts.signedUrl ?? url, opts.body);
  return new Request(url, { method, headers, body: opts.sentBody ?? opts.body });
}

const opts = { timeoutMs: 60_000 };

testWithTimeout({ name: "signed requests: a member's MAC proves its name", ...opts }, async () => {
  const { ca, verifier: v, signerFor } = await setup();
  const n2 = await member(ca, "n2");
  const signer = signerFor("n2", n2);
  const got = await v.verify(await signed(signer, { body: '{"a":1}' }));
  assertEquals(got?.proof, { authorized: true, commonName: "n2", fingerprint: n2.fp });
  // The handler reads the very body that was checked.
  assertEquals(await got!.request.text(), '{"a":1}');
  // GET (no body), and an unsigned request (a client): no proof at all.
  const get = await v.verify(await signed(signer, { method: "GET" }));
  assert(get?.proof.authorized, get?.proof.problem);
  assertEquals(await v.verify(new Request(`${SELF}/healthz`)), null);
});

testWithTimeout({ name: "signed requests: forgeries are refused", ...opts }, async () => {
  const { ca, verifier: v, signerFor } = await setup();
  const n2 = signerFor("n2", await member(ca, "n2"));
  const refused = async (req: Request, why: RegExp) => {
    const got = await v.verify(req);
    assert(got && !got.proof.authorized, "accepted");
    assert(why.test(got.proof.problem ?? ""), got.proof.problem);
  };
  // A certificate from another CA (its holder trusting ours, to reach n1).
  await refused(
    await signed(signerFor("n2", await member(await createCa("c2"), "n2"))),
    /cluster CA/,
  );
  // Body changed after signing.
  await refused(await signed(n2, { body: "a", sentBody: "b" }), /body does not match/);
  // Made for another member (a member replaying what it received): other URL, other pair key.
  await refused(await signed(n2, { signedUrl: `${OTHER}/internal/raft?x=1` }), /does not verify/);
  // Path or query changed.
  await refused(
    await signed(n2, { signedUrl: `${SELF}/internal/raft?x=1`, url: `${SELF}/internal/raft?x=2` }),
    /does not verify/,
  );
  // A name other than the certificate's.
  const req = await signed(n2);
  const h = new Headers(req.headers);
  h.set(PEER_SIGNATURE_HEADER, h.get(PEER_SIGNATURE_HEADER)!.replace(/^n2 /, "n3 "));
  await refused(new Request(req.url, { method: "POST", headers: h }), /names "n3"/);
  // Another member's certificate with n2's MAC.
  const n3 = signerFor("n3", await member(ca, "n3"));
  const swapped = new Headers((await signed(n2)).headers);
  swapped.set(PEER_CERT_HEADER, (await signed(n3)).headers.get(PEER_CERT_HEADER)!);
  await refused(new Request(req.url, { method: "POST", headers: swapped }), /names "n2"/);
  // Replayed: the same request twice.
  const once = await signed(n2, { body: "x" });
  const again = once.clone();
  assert((await v.verify(once))?.proof.authorized);
  await refused(again, /replayed/);
  // Stale: checked 31 s later, or 31 s earlier.
  const late = await v.verify(await signed(n2), Date.now() + 31_000);
  assert(late && !late.proof.authorized && /clock/.test(late.proof.problem!));
  const early = await v.verify(await signed(n2), Date.now() - 31_000);
  assert(early && !early.proof.authorized && /clock/.test(early.proof.problem!));
});

testWithTimeout(
  { name: "signed requests: a streamed body is signed as such", ...opts },
  async () => {
    const { ca, verifier: v, signerFor } = await setup();
    const signer = signerFor("n2", await member(ca, "n2"));
    const stream = new Blob(["streamed"]).stream();
    const headers = await signer.headers("POST", `${SELF}/internal/x`, stream);
    assert(headers[PEER_SIGNATURE_HEADER].includes(` ${UNSIGNED_BODY} `));
    const got = await v.verify(
      new Request(`${SELF}/internal/x`, { method: "POST", headers, body: stream }),
    );
    assert(got?.proof.authorized, got?.proof.problem);
    assertEquals(await got!.request.text(), "streamed");
  },
);

testWithTimeout({
  name: "signed requests: a receiver outside the cluster CA gets nothing",
  ...opts,
}, async () => {
  const ca = await createCa("c1");
  const impostor = await member(await createCa("c2"), "n1");
  const signer = new RequestSigner(
    "n2",
    { ...(await member(ca, "n2")), caPem: ca.certPem },
    () => Promise.resolve(impostor.certPem),
  );
  const err = await signer.headers("GET", `${SELF}/x`, null).then(() => null, (e) => e);
  assert(/not signed by the cluster CA/.test(String(err)), String(err));
});

testWithTimeout(
  { name: "ReplayGuard: bounded, and a forgotten nonce stays refused", ...opts },
  () => {
    const g = new ReplayGuard(3, 30_000);
    const now = 1_000_000;
    assert(g.admit("a", now - 10, now));
    assert(!g.admit("a", now - 10, now), "replay");
    assert(g.admit("b", now - 5, now));
    assert(g.admit("c", now - 4, now));
    assert(g.admit("d", now - 3, now)); // evicts "a"
    assertEquals(g.size, 3);
    // "a" was forgotten: its time is now at or below the floor, so it is refused anyway.
    assert(!g.admit("a", now - 10, now), "a forgotten nonce was accepted again");
    assert(!g.admit("e", now - 10, now), "older than the floor");
    // Entries past the window go by themselves.
    assert(g.admit("f", now + 40_000, now + 40_000));
    assertEquals(g.size, 1);
  },
);
