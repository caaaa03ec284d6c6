/**
 * Test support: a throwaway X.509 v3 PKI made with openssl (ECDSA P-256), laid out like a
 * node's data dir (`ca.crt`, `tls/node.crt`, `tls/node.key`), for tests of QEMU's TLS.
 */
import { join } from "node:path";
import type { NodeTlsPaths } from "./tls.ts";

/** A certificate authority in a directory of its own. */
export interface TestCa {
  dir: string;
  cert: string;
  key: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

const P256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/** A self-signed CA certificate (basicConstraints CA:TRUE, keyCertSign) named `name`. */
export async function makeCa(dir: string, name: string): Promise<TestCa> {
  await Deno.mkdir(dir, { recursive: true });
  await openssl([
    "req",
    "-x509",
    ...P256,
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-subj",
    `/CN=${name}`,
    "-days",
    "2",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
  return { dir, cert: join(dir, "ca.crt"), key: join(dir, "ca.key") };
}

/**
 * A node certificate signed by `ca` (CN = `cn`, EKU serverAuth+clientAuth, SANs `ips` and
 * localhost), written as `dir/tls/node.crt` and `dir/tls/node.key`, with the certificates of
 * `trust` (default: `ca`) as `dir/ca.crt`. Returns the paths in the node data-dir layout.
 */
export async function makeNodeCert(
  dir: string,
  ca: TestCa,
  cn: string,
  opts: { ips?: string[]; trust?: TestCa[] } = {},
): Promise<NodeTlsPaths> {
  await Deno.mkdir(join(dir, "tls"), { recursive: true });
  const ips = opts.ips ?? ["127.0.0.1"];
  await Deno.writeTextFile(
    join(dir, "tls", "ext.cnf"),
    [
      "basicConstraints=critical,CA:FALSE",
      // As core/pki/ca.ts issues node certificates (an EC key has no keyEncipherment).
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth,clientAuth",
      `subjectAltName=${[...ips.map((ip) => `IP:${ip}`), "DNS:localhost"].join(",")}`,
    ].join("\n") + "\n",
  );
  const tls = join(dir, "tls");
  await openssl([
    "req",
    ...P256,
    "-keyout",
    "node.key",
    "-out",
    "node.csr",
    "-subj",
    `/CN=${cn}`,
  ], tls);
  await openssl([
    "x509",
    "-req",
    "-in",
    "node.csr",
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    "-CAcreateserial",
    "-out",
    "node.crt",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  ], tls);
  const bundle = await Promise.all((opts.trust ?? [ca]).map((c) => Deno.readTextFile(c.cert)));
  await Deno.writeTextFile(join(dir, "ca.crt"), bundle.join(""));
  return {
    caCert: join(dir, "ca.crt"),
    cert: join(tls, "node.crt"),
    key: join(tls, "node.key"),
  };
}
