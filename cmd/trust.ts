/**
 * Which cluster CA the CLI trusts for an https server, as `incus remote add` and kubeadm's
 * discovery hash do it: an explicit `--ca FILE`; else the CA pinned earlier for that server under
 * the user's config dir; else trust on first use — the server's CA is fetched *untrusted*, and
 * pinned only after its SHA-256 fingerprint matches `--ca-fingerprint` or a person confirmed it
 * at a terminal. A pinned CA is never replaced silently: when it no longer verifies the server
 * (another cluster at that address), the request fails naming the pinned file.
 *
 * @module
 */
import { join } from "node:path";
import { fingerprint, normalizeFingerprint } from "../core/pki/mod.ts";
import { fetchUntrustedCa } from "../core/cluster/bootstrap.ts";
import { NovaError, ValidationError } from "../core/errors/mod.ts";

/** Where pinned CAs live, below `$XDG_CONFIG_HOME` (else `~/.config`). */
export const PINNED_CA_DIR = "novactl/servers";

/** What the trust decision needs from the outside world (replaced in tests). */
export interface TrustDeps {
  /** The CA PEM the server serves at /api/v1/cluster/ca, fetched without verifying it. */
  fetchCa(server: string): Promise<string>;
  /** Whether a person can answer a question: stdin and stderr are terminals. */
  interactive(): boolean;
  /** Asks a yes/no question on the terminal; true only on an explicit yes. */
  confirm(question: string): Promise<boolean>;
  /** A line for the person at the terminal (stderr: stdout stays the command's output). */
  notice(line: string): void;
  /** Environment lookup (XDG_CONFIG_HOME, HOME). */
  env(name: string): string | undefined;
}

/** The process's own terminal and environment. */
export const processTrustDeps: TrustDeps = {
  fetchCa: fetchUntrustedCa,
  interactive: () => Deno.stdin.isTerminal() && Deno.stderr.isTerminal(),
  confirm: askYesNo,
  notice: (line) => console.error(line),
  env: (name) => Deno.env.get(name),
};

/** The CA to use for a server, and where it came from (for error messages). */
export interface ResolvedCa {
  file: string;
  source: "flag" | "pinned";
}

/**
 * Normalizes a fingerprint given on the command line: 64 hex digits, optionally with colons
 * (as openssl prints it) or a `sha256:` prefix.
 *
 * @throws NovaError("usage") when it is not a SHA-256 fingerprint
 */
export function parseFingerprint(value: string): string {
  const fp = normalizeFingerprint(value.trim().replace(/^sha256:/i, ""));
  if (!/^[0-9a-f]{64}$/.test(fp)) {
    throw new NovaError(
      "usage",
      `--ca-fingerprint must be a SHA-256 (64 hex digits), not ${value}`,
    );
  }
  return fp;
}

/** `https://host:port` of a server URL (what is pinned, and named in questions). */
export function serverOrigin(server: string): string {
  const u = new URL(server);
  return `${u.protocol}//${u.hostname}:${u.port || (u.protocol === "https:" ? "443" : "80")}`;
}

/**
 * The file holding the CA pinned for a server:
 * `$XDG_CONFIG_HOME/novactl/servers/<host>_<port>.crt` (else `~/.config/...`).
 */
export function pinnedCaPath(server: string, env: (name: string) => string | undefined): string {
  const u = new URL(server);
  const home = env("HOME");
  const base = env("XDG_CONFIG_HOME") || (home ? join(home, ".config") : undefined);
  if (!base) {
    throw new ValidationError("cannot pin the cluster CA: neither XDG_CONFIG_HOME nor HOME is set");
  }
  const host = u.hostname.replace(/^\[|\]$/g, "").replace(/[^A-Za-z0-9.-]/g, "-");
  return join(base, PINNED_CA_DIR, `${host}_${u.port || "443"}.crt`);
}

/** The fingerprint of a PEM the server served, or a clear error when it is not a certificate. */
function fingerprintOfServed(server: string, pem: string): string {
  try {
    return fingerprint(pem);
  } catch {
    throw new ValidationError(`${server} did not serve a CA certificate`);
  }
}

async function readPinned(file: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new ValidationError(`cannot read the pinned CA ${file}: ${(err as Error).message}`);
  }
}

/**
 * Checks that the server's own certificate verifies against the CA it served, before that CA is
 * pinned (a CA copied from elsewhere, fronted by another certificate, is not pinned).
 */
async function assertServedBy(server: string, pem: string): Promise<void> {
  const client = Deno.createHttpClient({ caCerts: [pem] });
  try {
    const res = await fetch(server.replace(/\/$/, "") + "/healthz", {
      client,
      signal: AbortSignal.timeout(15_000),
    });
    await res.body?.cancel();
  } catch (err) {
    const cause = (err as Error).cause;
    throw new ValidationError(
      `${serverOrigin(server)} served a CA that does not verify its own certificate; nothing ` +
        `pinned: ${(err as Error).message}${cause instanceof Error ? `: ${cause.message}` : ""}`,
    );
  } finally {
    client.close();
  }
}

/** Writes a pinned CA (dir 0700, file 0600; renamed into place so a reader never sees half). */
export async function writePinned(file: string, pem: string): Promise<void> {
  const dir = join(file, "..");
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.chmod(dir, 0o700);
  const tmp = `${file}.tmp-${crypto.randomUUID()}`;
  await Deno.writeTextFile(tmp, pem, { mode: 0o600 });
  await Deno.rename(tmp, file);
}

/**
 * Decides which CA file verifies `server`, pinning one on first use when the person or
 * `--ca-fingerprint` accepts it. Returns undefined for plain-http servers.
 *
 * @throws ValidationError (exit 1) when nothing is trusted yet and no one confirmed, or a
 *   fingerprint does not match; the message names the fingerprint the server presents.
 */
export async function resolveCa(
  opts: { server: string; ca?: string; caFingerprint?: string },
  deps: TrustDeps,
): Promise<ResolvedCa | undefined> {
  if (!opts.server.startsWith("https:")) return undefined;
  const want = opts.caFingerprint ? parseFingerprint(opts.caFingerprint) : undefined;
  if (opts.ca) {
    if (want) {
      const have = fingerprintOfFile(opts.ca, await readCaFile(opts.ca));
      if (have !== want) {
        throw new ValidationError(
          `--ca ${opts.ca} has fingerprint ${have}, not the --ca-fingerprint ${want}`,
        );
      }
    }
    return { file: opts.ca, source: "flag" };
  }
  const file = pinnedCaPath(opts.server, deps.env);
  const pinned = await readPinned(file);
  if (pinned !== undefined) {
    const have = fingerprintOfFile(file, pinned);
    if (want && have !== want) {
      throw new ValidationError(
        `the CA pinned for ${serverOrigin(opts.server)} in ${file} has fingerprint ${have}, not ` +
          `the --ca-fingerprint ${want}; if the cluster was re-created, remove ${file} and pin again`,
      );
    }
    return { file, source: "pinned" };
  }
  const origin = serverOrigin(opts.server);
  const pem = await deps.fetchCa(opts.server);
  const presented = fingerprintOfServed(opts.server, pem);
  if (want) {
    if (presented !== want) {
      throw new ValidationError(
        `${origin} presents cluster CA fingerprint ${presented}, not the --ca-fingerprint ${want}: ` +
          `wrong cluster, or someone in between; nothing pinned`,
      );
    }
  } else if (!await confirmed(origin, presented, deps)) {
    throw new ValidationError(
      `${origin} is not trusted yet; its cluster CA has SHA-256 fingerprint ${presented}: ` +
        `check it (node log or DIR/ca.crt), then pass --ca DIR/ca.crt or --ca-fingerprint ${presented}`,
    );
  }
  await assertServedBy(opts.server, pem);
  await writePinned(file, pem);
  deps.notice(`pinned the cluster CA of ${origin} (SHA-256 ${presented}) in ${file}`);
  return { file, source: "pinned" };
}

/** Shows the fingerprint and asks, at a terminal only. */
async function confirmed(origin: string, fp: string, deps: TrustDeps): Promise<boolean> {
  if (!deps.interactive()) return false;
  deps.notice(`${origin} presents a cluster CA with SHA-256 fingerprint:\n  ${fp}`);
  return await deps.confirm(`Trust this cluster CA for ${origin}? [y/N] `);
}

async function readCaFile(file: string): Promise<string> {
  try {
    return await Deno.readTextFile(file);
  } catch (err) {
    throw new ValidationError(`cannot read --ca ${file}: ${(err as Error).message}`);
  }
}

function fingerprintOfFile(file: string, pem: string): string {
  try {
    return fingerprint(pem);
  } catch {
    throw new ValidationError(`${file} holds no certificate`);
  }
}

/**
 * `novactl remote trust`: pins the server's CA without a question when `--yes` or a matching
 * `--ca-fingerprint` is given (else asks at a terminal). A CA already pinned for the server is
 * kept if it is the one presented, and otherwise refused: removing the old pin is a decision.
 */
export async function trustRemote(
  opts: { server: string; caFingerprint?: string; yes?: boolean },
  deps: TrustDeps,
): Promise<{ server: string; fingerprint: string; file: string; alreadyPinned: boolean }> {
  if (!opts.server.startsWith("https:")) {
    throw new NovaError("usage", `--server ${opts.server} is not https: nothing to trust`);
  }
  const origin = serverOrigin(opts.server);
  const want = opts.caFingerprint ? parseFingerprint(opts.caFingerprint) : undefined;
  const file = pinnedCaPath(opts.server, deps.env);
  const pem = await deps.fetchCa(opts.server);
  const presented = fingerprintOfServed(opts.server, pem);
  if (want && presented !== want) {
    throw new ValidationError(
      `${origin} presents cluster CA fingerprint ${presented}, not the --ca-fingerprint ${want}: ` +
        `wrong cluster, or someone in between; nothing pinned`,
    );
  }
  const pinned = await readPinned(file);
  if (pinned !== undefined) {
    const have = fingerprintOfFile(file, pinned);
    if (have !== presented) {
      throw new ValidationError(
        `${file} already pins another CA (${have}) for ${origin}, which now presents ${presented}; ` +
          `if the cluster was re-created, remove ${file} and run this again`,
      );
    }
    return { server: origin, fingerprint: have, file, alreadyPinned: true };
  }
  if (!want && !opts.yes && !await confirmed(origin, presented, deps)) {
    throw new ValidationError(
      `not pinned: ${origin} presents cluster CA fingerprint ${presented}; ` +
        `confirm with --ca-fingerprint ${presented} or --yes`,
    );
  }
  await assertServedBy(opts.server, pem);
  await writePinned(file, pem);
  return { server: origin, fingerprint: presented, file, alreadyPinned: false };
}

/** Prints the question on stderr and reads one line from stdin. */
async function askYesNo(question: string): Promise<boolean> {
  await Deno.stderr.write(new TextEncoder().encode(question));
  const buf = new Uint8Array(256);
  let line = "";
  while (!line.includes("\n")) {
    const n = await Deno.stdin.read(buf);
    if (n === null) break;
    line += new TextDecoder().decode(buf.subarray(0, n));
  }
  return /^\s*y(es)?\s*$/i.test(line.split("\n")[0]);
}
