/**
 * The cluster CA and node certificates: ECDSA P-256, X.509 v3, made with
 * `@peculiar/x509` over WebCrypto. Node certificates name the node in their
 * CN and carry EKU serverAuth + clientAuth, since every node is both a TLS
 * server (its API) and a TLS client (its peer traffic).
 */
import "reflect-metadata"; // @peculiar/x509's dependency injection needs it before loading
import * as x509 from "@peculiar/x509";
import { createHash, randomBytes } from "node:crypto";
import { isIP } from "node:net";
import { ValidationError } from "../errors/mod.ts";

x509.cryptoProvider.set(crypto);

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;
/** CA certificates live long: rotating the cluster CA is a separate, deliberate act. */
export const CA_VALIDITY_DAYS = 3650;
/** Node certificates: a node that lives longer rejoins (or a later rotation re-signs). */
export const NODE_VALIDITY_DAYS = 3650;
/** Node names as the API accepts them; they become CNs verbatim, so nothing needs escaping. */
const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A certificate with its private key, both PEM (the key PKCS#8). */
export interface KeyPairPem {
  certPem: string;
  keyPem: string;
}

/** PEM (one or more blocks) → DER of the first block of `label`. */
export function pemToDer(pem: string, label = "CERTIFICATE"): Uint8Array<ArrayBuffer> {
  const m = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`).exec(pem);
  if (!m) throw ValidationError.field("pem", `no ${label} block`);
  const bin = atob(m[1].replace(/\s+/g, ""));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** DER → PEM with 64-character lines. */
export function derToPem(der: ArrayBuffer | Uint8Array, label = "CERTIFICATE"): string {
  const bytes = der instanceof Uint8Array ? der : new Uint8Array(der);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  const b64 = btoa(bin).replace(/(.{64})/g, "$1\n").replace(/\n$/, "");
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/**
 * SHA-256 of a certificate's DER, lowercase hex without separators.
 *
 * @param cert PEM text, or the DER bytes
 * @example fingerprint(await Deno.readTextFile("DIR/ca.crt")) // "3f1c…" (64 hex digits)
 */
export function fingerprint(cert: string | Uint8Array): string {
  const der = typeof cert === "string" ? pemToDer(cert) : cert;
  return createHash("sha256").update(der).digest("hex");
}

/** Normalizes a fingerprint written with colons or in upper case (as Node's fingerprint256). */
export function normalizeFingerprint(fp: string): string {
  return fp.replace(/:/g, "").toLowerCase();
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  return derToPem(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

/** Imports a PKCS#8 PEM ECDSA P-256 private key for signing. */
export async function importKeyPem(pem: string): Promise<CryptoKey> {
  return await crypto.subtle.importKey("pkcs8", pemToDer(pem, "PRIVATE KEY"), ALG, true, ["sign"]);
}

function serial(): string {
  const b = randomBytes(16);
  b[0] &= 0x7f; // positive INTEGER
  return b.toString("hex");
}

/**
 * Creates a cluster CA: a self-signed certificate allowed to sign node
 * certificates only (path length 0).
 *
 * @param clusterId names the CA, so two clusters' CAs are told apart by eye
 */
export async function createCa(clusterId: string): Promise<KeyPairPem> {
  const keys = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=novactl cluster CA ${clusterId}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + CA_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: await exportKeyPem(keys.privateKey) };
}

/** Subject alternative names for a node reachable at `host` (an IP or a DNS name). */
export function nodeSans(host: string): string[] {
  const bare = host.replace(/^\[|\]$/g, "");
  return [...new Set([bare, "127.0.0.1", "::1", "localhost"])].filter((h) => h && h !== "0.0.0.0");
}

function sanExtension(sans: string[]): x509.SubjectAlternativeNameExtension {
  return new x509.SubjectAlternativeNameExtension(
    sans.map((s) => ({ type: isIP(s) ? "ip" as const : "dns" as const, value: s })),
  );
}

/**
 * Makes a node's private key and a certificate signing request for it.
 *
 * @param name the node's name (the CN)
 * @param sans addresses the node is reached at (see {@link nodeSans})
 */
export async function createNodeKeyAndCsr(
  name: string,
  sans: string[],
): Promise<{ keyPem: string; csrPem: string }> {
  if (!NAME_RE.test(name)) throw ValidationError.field("name", `"${name}" is not a node name`);
  const keys = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${name}`,
    keys,
    signingAlgorithm: ALG,
    extensions: [sanExtension(sans)],
  });
  return { keyPem: await exportKeyPem(keys.privateKey), csrPem: csr.toString("pem") + "\n" };
}

/**
 * Signs a node's CSR with the CA (the leader, at join). The CSR's own signature
 * must hold (the joiner has the key), its CN must be `name`, and its public key
 * ECDSA P-256. The certificate's subject and SANs are taken from the arguments
 * after those checks, never copied blindly from the request.
 *
 * @throws {ValidationError} a malformed or mismatched CSR
 */
export async function signCsr(
  ca: KeyPairPem,
  csrPem: string,
  opts: { name: string; sans: string[] },
): Promise<string> {
  if (!NAME_RE.test(opts.name)) {
    throw ValidationError.field("name", `"${opts.name}" is not a node name`);
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw ValidationError.field("csr", "not a PEM certificate signing request");
  }
  if (!(await csr.verify().catch(() => false))) {
    throw ValidationError.field("csr", "signature does not verify");
  }
  const cn = csr.subjectName.getField("CN");
  if (cn.length !== 1 || cn[0] !== opts.name) {
    throw ValidationError.field("csr", `CN must be the node name "${opts.name}"`);
  }
  const alg = csr.publicKey.algorithm as EcKeyAlgorithm;
  if (alg.name !== "ECDSA" || alg.namedCurve !== "P-256") {
    throw ValidationError.field("csr", "key must be ECDSA P-256");
  }
  const caCert = new x509.X509Certificate(ca.certPem);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${opts.name}`,
    issuer: caCert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + NODE_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: ALG,
    publicKey: csr.publicKey,
    signingKey: await importKeyPem(ca.keyPem),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(
        [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
        false,
      ),
      sanExtension(opts.sans),
      await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
    ],
  });
  return cert.toString("pem") + "\n";
}

/** What a certificate says about itself (for checks and messages). */
export interface CertInfo {
  commonName: string | null;
  fingerprint: string;
  notAfter: Date;
  sans: string[];
}

/** Parses a PEM certificate. */
export function certInfo(certPem: string): CertInfo {
  const cert = new x509.X509Certificate(certPem);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return {
    commonName: cert.subjectName.getField("CN")[0] ?? null,
    fingerprint: fingerprint(certPem),
    notAfter: cert.notAfter,
    sans: san ? san.names.items.map((n) => n.value) : [],
  };
}

/**
 * Whether `certPem` was signed by the CA in `caPem` and is within its validity.
 * (The TLS layer checks the same for live connections; this serves joins and tests.)
 */
export async function verifyCert(
  certPem: string,
  caPem: string,
  at = new Date(),
): Promise<boolean> {
  try {
    const cert = new x509.X509Certificate(certPem);
    const ca = new x509.X509Certificate(caPem);
    if (cert.issuer !== ca.subject) return false;
    return await cert.verify({ publicKey: ca.publicKey, date: at });
  } catch {
    return false;
  }
}
