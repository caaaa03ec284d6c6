/**
 * QEMU's TLS credentials for migration and NBD, built from the node's cluster certificates.
 *
 * QEMU's `tls-creds-x509` object reads a directory with fixed file names: `ca-cert.pem`, and
 * `server-cert.pem`/`server-key.pem` (listening side) or `client-cert.pem`/`client-key.pem`
 * (connecting side), and `dh-params.pem`. The node's one certificate (EKU serverAuth + clientAuth) serves as both.
 * QEMU loads the files when the object is created, so the directory lives only for that
 * moment: it is made fresh in the temp dir (QEMU, running as its own user, cannot traverse
 * the node's 0700 data dir), owned by QEMU's user, and removed right after.
 *
 * Missing certificates are an error, never a reason to migrate in plain text.
 */
import { join } from "node:path";
import { NovaError } from "../../core/errors/mod.ts";
import type { QemuUser } from "./confine.ts";

/** Where a node's CA certificate, certificate and key are (PEM files). */
export interface NodeTlsPaths {
  caCert: string;
  cert: string;
  key: string;
}

/** The agreed layout of a node's data dir: `ca.crt`, `tls/node.crt`, `tls/node.key`. */
export function nodeTlsPaths(dataDir: string): NodeTlsPaths {
  return {
    caCert: join(dataDir, "ca.crt"),
    cert: join(dataDir, "tls", "node.crt"),
    key: join(dataDir, "tls", "node.key"),
  };
}

/**
 * RFC 7919's ffdhe2048 group (public, standard). Without `dh-params.pem` a QEMU server generates
 * 2048-bit DH parameters on every `object-add`: 150-550 ms measured here, on the path of every
 * migration. TLS 1.3 and ECDHE do not use them; this only spares the generation.
 */
const FFDHE2048_PEM = `-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
`;

/** The files of QEMU's x509 credentials directory, each with the node file it comes from. */
const LAYOUT: [string, keyof NodeTlsPaths][] = [
  ["ca-cert.pem", "caCert"],
  ["server-cert.pem", "cert"],
  ["server-key.pem", "key"],
  ["client-cert.pem", "cert"],
  ["client-key.pem", "key"],
];

/**
 * Writes a QEMU x509 credentials directory (0700, files 0600, owned by `owner` when given)
 * from the node's certificate files and returns its path.
 *
 * @throws {NovaError} "precondition_failed" when a certificate file is missing or unreadable.
 */
export async function buildQemuCredsDir(
  paths: NodeTlsPaths,
  owner: QemuUser | null,
): Promise<string> {
  const pem: Partial<Record<keyof NodeTlsPaths, string>> = {};
  for (const key of ["caCert", "cert", "key"] as const) {
    try {
      pem[key] = await Deno.readTextFile(paths[key]);
    } catch (err) {
      throw new NovaError(
        "precondition_failed",
        `no TLS ${key === "caCert" ? "CA certificate" : key} for QEMU migration/NBD at ` +
          `${paths[key]} (${(err as Error).name}); refusing to move guest data in plain text`,
      );
    }
    if (!pem[key]!.includes("-----BEGIN ")) {
      throw new NovaError("precondition_failed", `${paths[key]} is not a PEM file`);
    }
  }
  const dir = await Deno.makeTempDir({ prefix: "novactl-qemu-tls-" });
  try {
    const files: [string, string][] = [
      ...LAYOUT.map(([file, from]): [string, string] => [file, pem[from]!]),
      ["dh-params.pem", FFDHE2048_PEM],
    ];
    for (const [file, text] of files) {
      await Deno.writeTextFile(join(dir, file), text, { mode: 0o600 });
      if (owner) await Deno.chown(join(dir, file), owner.uid, owner.gid);
    }
    await Deno.chmod(dir, 0o700);
    if (owner) await Deno.chown(dir, owner.uid, owner.gid);
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
  return dir;
}

/** Runs `fn` with a fresh credentials directory (see {@link buildQemuCredsDir}) and removes it. */
export async function withQemuCredsDir<T>(
  paths: NodeTlsPaths,
  owner: QemuUser | null,
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await buildQemuCredsDir(paths, owner);
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * The client certificate distinguished names (GnuTLS's RFC 4514 form) that are node `name`'s:
 * its CN alone, or first or last among other attributes.
 */
export function nodeDnPatterns(name: string): string[] {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    throw new NovaError("internal", `node name ${JSON.stringify(name)} cannot be matched in a DN`);
  }
  return [`CN=${name}`, `CN=${name},*`, `*,CN=${name}`];
}
