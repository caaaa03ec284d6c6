/** Where a node keeps its TLS material in its data dir, and reading/writing it. */
import { dirname, join } from "node:path";
import { writeFileDurably } from "../store/files.ts";
import { certInfo, fingerprint } from "./ca.ts";
import { ValidationError } from "../errors/mod.ts";

/** The cluster CA certificate, world-readable: clients pass it with `--ca`. */
export const CA_CERT_FILE = "ca.crt";
/** This node's certificate (CN = node name). */
export const NODE_CERT_FILE = "tls/node.crt";
/** This node's private key (PKCS#8), 0600. */
export const NODE_KEY_FILE = "tls/node.key";

/** A node's TLS identity: what its server presents and its peer client authenticates with. */
export interface NodeTls {
  /** The certificate's CN: the node's name. */
  name: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** SHA-256 of the node certificate's DER, lowercase hex. */
  fingerprint: string;
}

/**
 * Writes the CA certificate, node certificate and key into `dataDir`
 * (key 0600 in a 0700 directory; certificates 0644).
 */
export async function writeNodeTls(
  dataDir: string,
  tls: { caPem: string; certPem: string; keyPem: string },
): Promise<void> {
  const keyPath = join(dataDir, NODE_KEY_FILE);
  await Deno.mkdir(dirname(keyPath), { recursive: true, mode: 0o700 });
  await writeFileDurably(keyPath, tls.keyPem, 0o600);
  await writeFileDurably(join(dataDir, NODE_CERT_FILE), tls.certPem, 0o644);
  await writeFileDurably(join(dataDir, CA_CERT_FILE), tls.caPem, 0o644);
}

/**
 * Reads a node's TLS identity from its data dir.
 *
 * @throws {ValidationError} when a file is missing or the certificate names no node
 */
export async function loadNodeTls(dataDir: string): Promise<NodeTls> {
  const read = async (f: string) => {
    try {
      return await Deno.readTextFile(join(dataDir, f));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw ValidationError.field("data-dir", `${join(dataDir, f)} is missing`);
      }
      throw err;
    }
  };
  const [caPem, certPem, keyPem] = await Promise.all([
    read(CA_CERT_FILE),
    read(NODE_CERT_FILE),
    read(NODE_KEY_FILE),
  ]);
  const name = certInfo(certPem).commonName;
  if (!name) throw ValidationError.field("data-dir", `${NODE_CERT_FILE} has no CN`);
  return { name, caPem, certPem, keyPem, fingerprint: fingerprint(certPem) };
}
