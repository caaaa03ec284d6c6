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

async function member(
  ca: KeyPairPem,
  name: string,
): Promise<{ signer: RequestSigner; fp: string }> {
  const { keyPem, csrPem } = await createNodeKeyAndCsr(name, ["127.0.0.1"]);
  const certPem = await signCsr(ca, csrPem, { name, sans: ["127.0.0.1"] });
  return { signer: new RequestSigner(name, certPem, keyPem), fp: fingerprint(certPem) };
}

/** A request as the server sees it: signed for `signedUrl`, arriving at `url` with `body`. */
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

testWithTimeout(
  { name: "signed requests: a member's signature proves its name", ...opts },
  async () => {
    const ca = await createCa("c1");
    const n2 = await member(ca, "n2");
    const v = new SignatureVerifier(ca.certPem, SELF);
    const got = await v.verify(await signed(n2.signer, { body: '{"a":1}' }));
    assertEquals(got?.proof, { authorized: true, commonName: "n2", fingerprint: n2.fp });
    // The handler reads the very body that was checked.
    assertEquals(await got!.request.text(), '{"a":1}');
    // GET (no body), and an unsigned request (a client): no proof at all.
    const get = await v.verify(await signed(n2.signer, { method: "GET" }));
    assert(get?.proof.authorized, get?.proof.problem);
    assertEquals(await v.verify(new Request(`${SELF}/healthz`)), null);
  },
);

testWithTimeout({ name: "signed requests: forgeries are refused", ...opts }, async () => {
  const ca = await createCa("c1");
  const n2 = await member(ca, "n2");
  const v = new SignatureVerifier(ca.certPem, SELF);
  const refused = async (req: Request, why: RegExp) => {
    const got = await v.verify(req);
    assert(got && !got.proof.authorized, "accepted");
    assert(why.test(got.proof.problem ?? ""), got.proof.problem);
  };
  // Another cluster's CA.
  const foreign = await member(await createCa("c2"), "n2");
  await refused(await signed(foreign.signer), /cluster CA/);
  // Body changed after signing.
  await refused(await signed(n2.signer, { body: "a", sentBody: "b" }), /body does not match/);
  // Signed for another member's URL (a member replaying what it received).
  await refused(
    await signed(n2.signer, { signedUrl: "https://127.0.0.1:7444/internal/raft?x=1" }),
    /does not verify/,
  );
  // Path or query changed.
  await refused(
    await signed(n2.signer, {
      signedUrl: `${SELF}/internal/raft?x=1`,
      url: `${SELF}/internal/raft?x=2`,
    }),
    /does not verify/,
  );
  // A name other than the certificate's.
  const req = await signed(n2.signer);
  const h = new Headers(req.headers);
  h.set(PEER_SIGNATURE_HEADER, h.get(PEER_SIGNATURE_HEADER)!.replace(/^n2 /, "n3 "));
  await refused(new Request(req.url, { method: "POST", headers: h }), /names "n3"/);
  // Another member's certificate with n2's signature.
  const n3 = await member(ca, "n3");
  const other = await signed(n3.signer);
  const swapped = new Headers((await signed(n2.signer)).headers);
  swapped.set(PEER_CERT_HEADER, other.headers.get(PEER_CERT_HEADER)!);
  await refused(new Request(req.url, { method: "POST", headers: swapped }), /names "n2"/);
  // Replayed: the same request twice.
  const once = await signed(n2.signer, { body: "x" });
  const again = once.clone();
  assert((await v.verify(once))?.proof.authorized);
  await refused(again, /replayed/);
  // Stale: 31 s later, and 31 s early.
  const stale = await signed(n2.signer);
  const late = await v.verify(stale, Date.now() + 31_000);
  assert(late && !late.proof.authorized && /clock/.test(late.proof.problem!));
  const early = await v.verify(await signed(n2.signer), Date.now() - 31_000);
  assert(early && !early.proof.authorized && /clock/.test(early.proof.problem!));
});

testWithTimeout(
  { name: "signed requests: a streamed body is signed as such", ...opts },
  async () => {
    const ca = await createCa("c1");
    const n2 = await member(ca, "n2");
    const v = new SignatureVerifier(ca.certPem, SELF);
    const stream = new Blob(["streamed"]).stream();
    const headers = await n2.signer.headers("POST", `${SELF}/internal/x`, stream);
    assert(headers[PEER_SIGNATURE_HEADER].includes(` ${UNSIGNED_BODY} `));
    const got = await v.verify(
      new Request(`${SELF}/internal/x`, { method: "POST", headers, body: stream }),
    );
    assert(got?.proof.authorized, got?.proof.problem);
    assertEquals(await got!.request.text(), "streamed");
  },
);

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
    // "a" was forgotten: its time is now below the floor, so it is refused anyway.
    assert(!g.admit("a", now - 10, now), "a forgotten nonce was accepted again");
    assert(!g.admit("e", now - 10, now), "older than the floor");
    // Entries past the window go by themselves.
    assert(g.admit("f", now + 40_000, now + 40_000));
    assertEquals(g.size, 1);
  },
);
