import { assert, assertEquals, assertRejects, assertThrows } from "../testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import {
  certInfo,
  createCa,
  createNodeKeyAndCsr,
  fingerprint,
  formatJoinToken,
  loadNodeTls,
  nodeSans,
  parseJoinToken,
  pemToDer,
  signCsr,
  verifyCert,
  writeNodeTls,
} from "./mod.ts";
import { ValidationError } from "../errors/mod.ts";

const T = { timeoutMs: 2 * MINUTE };

testWithTimeout({
  name: "pki: a CA signs a node CSR into a v3 cert with CN, SANs and both EKUs",
  ...T,
}, async () => {
  const ca = await createCa("c1");
  const { csrPem } = await createNodeKeyAndCsr("n1", nodeSans("10.0.0.5"));
  const certPem = await signCsr(ca, csrPem, { name: "n1", sans: nodeSans("10.0.0.5") });
  const info = certInfo(certPem);
  assertEquals(info.commonName, "n1");
  assert(info.sans.includes("10.0.0.5") && info.sans.includes("127.0.0.1"));
  assert(info.sans.includes("localhost"));
  assert(await verifyCert(certPem, ca.certPem));
  const der = pemToDer(certPem);
  // TBSCertificate starts with [0] { INTEGER 2 } for v3 (Deno's TLS refuses v1).
  const text = Array.from(der.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
  assert(text.includes("a003020102"), `not v3: ${text}`);
  const ekuOid = new Uint8Array([0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03]);
  const hex = (a: Uint8Array) => Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
  assert(hex(der).includes(hex(ekuOid) + "01"), "serverAuth EKU missing");
  assert(hex(der).includes(hex(ekuOid) + "02"), "clientAuth EKU missing");
});

testWithTimeout({ name: "pki: a cert signed by another CA fails verification", ...T }, async () => {
  const ca = await createCa("c1");
  const other = await createCa("c1"); // same name, other key: must still fail
  const { csrPem } = await createNodeKeyAndCsr("n1", ["127.0.0.1"]);
  const foreign = await signCsr(other, csrPem, { name: "n1", sans: ["127.0.0.1"] });
  assert(!await verifyCert(foreign, ca.certPem));
  assert(await verifyCert(foreign, other.certPem));
  assert(fingerprint(ca.certPem) !== fingerprint(other.certPem));
});

testWithTimeout(
  { name: "pki: signCsr refuses a CSR for another name or a tampered one", ...T },
  async () => {
    const ca = await createCa("c1");
    const { csrPem } = await createNodeKeyAndCsr("n1", ["127.0.0.1"]);
    await assertRejects(() => signCsr(ca, csrPem, { name: "n2", sans: [] }), ValidationError);
    await assertRejects(() => signCsr(ca, "garbage", { name: "n1", sans: [] }), ValidationError);
    // Flip one byte inside the signed body: the CSR's self-signature no longer holds.
    const der = pemToDer(csrPem, "CERTIFICATE REQUEST");
    der[40] ^= 0x01;
    let bin = "";
    for (const b of der) bin += String.fromCharCode(b);
    const bad = `-----BEGIN CERTIFICATE REQUEST-----\n${
      btoa(bin)
    }\n-----END CERTIFICATE REQUEST-----\n`;
    await assertRejects(() => signCsr(ca, bad, { name: "n1", sans: [] }), ValidationError);
  },
);

testWithTimeout(
  { name: "pki: fingerprint is SHA-256 of the DER, as openssl prints it", ...T },
  async () => {
    const ca = await createCa("c1");
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/ca.crt`, ca.certPem);
      const out = await new Deno.Command("openssl", {
        args: ["x509", "-in", `${dir}/ca.crt`, "-noout", "-fingerprint", "-sha256"],
      }).output();
      if (out.success) {
        const fp = new TextDecoder().decode(out.stdout).split("=")[1].trim().replace(/:/g, "");
        assertEquals(fingerprint(ca.certPem), fp.toLowerCase());
      }
      assertEquals(fingerprint(ca.certPem).length, 64);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

testWithTimeout({ name: "pki: node TLS files round-trip, key 0600", ...T }, async () => {
  const ca = await createCa("c1");
  const { keyPem, csrPem } = await createNodeKeyAndCsr("n1", ["127.0.0.1"]);
  const certPem = await signCsr(ca, csrPem, { name: "n1", sans: ["127.0.0.1"] });
  const dir = await Deno.makeTempDir();
  try {
    await writeNodeTls(dir, { caPem: ca.certPem, certPem, keyPem });
    const tls = await loadNodeTls(dir);
    assertEquals(tls.name, "n1");
    assertEquals(tls.fingerprint, fingerprint(certPem));
    assertEquals(tls.caPem, ca.certPem);
    assertEquals((await Deno.stat(`${dir}/tls/node.key`)).mode! & 0o777, 0o600);
    assertEquals((await Deno.stat(`${dir}/ca.crt`)).mode! & 0o077, 0o044);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({ name: "pki: join tokens carry the CA fingerprint", ...T }, () => {
  const fp = "ab".repeat(32);
  const t = formatJoinToken("nvj_secret", fp);
  assertEquals(parseJoinToken(t), { secret: "nvj_secret", caFingerprint: fp });
  assertThrows(() => parseJoinToken("nvj_secret"), ValidationError);
  assertThrows(() => parseJoinToken("nvj_secret.abc"), ValidationError);
});
