/**
 * cloud-init NoCloud seed contents: user-data, meta-data and network-config
 * rendered from `vm create` flags, validated before anything is recorded so
 * a malformed document never reaches a host.
 */
import { parse, stringify } from "yaml";
import { ValidationError } from "../errors/mod.ts";

export interface CloudInitSpec {
  user?: string;
  sshKeys?: string[];
  passwordHash?: string;
  /** Operator-supplied user-data (`#cloud-config` YAML or a `#!` script). */
  userData?: string;
}

export interface SeedFiles {
  "user-data": string;
  "meta-data": string;
  "network-config": string;
}

const USER = /^[a-z_][a-z0-9_-]{0,31}$/;
const SSH_KEY =
  /^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( .*)?$/;
const PASSWORD_HASH = /^\$(1|5|6|y|2[aby]|gy)\$[^\s:]+$/;
/** Largest user-data document, in UTF-8 bytes (it is stored in cluster state). */
export const MAX_USER_DATA_BYTES = 64 * 1024;
const MAX_USER_DATA = MAX_USER_DATA_BYTES;
/** Longest SSH public key line (a 16384-bit RSA key is about 2.8 KB). */
export const MAX_SSH_KEY_CHARS = 8 * 1024;
/** At most this many SSH keys. */
export const MAX_SSH_KEYS = 64;
/** Longest crypt(3) hash (yescrypt and SHA-512 hashes are about 120 chars). */
export const MAX_PASSWORD_HASH_CHARS = 512;

/** What callers below admin see instead of a secret. */
export const REDACTED = "[redacted]";

/** Throws a ValidationError naming the field; returns the normalized spec. */
export function validateCloudInit(spec: CloudInitSpec): CloudInitSpec {
  if (spec.user !== undefined && !USER.test(spec.user)) {
    throw ValidationError.field("user", `"${spec.user}" is not a valid Linux user name`);
  }
  if ((spec.sshKeys?.length ?? 0) > MAX_SSH_KEYS) {
    throw ValidationError.field("sshKeys", `at most ${MAX_SSH_KEYS} keys`);
  }
  for (const [i, key] of (spec.sshKeys ?? []).entries()) {
    if (key.length > MAX_SSH_KEY_CHARS) {
      throw ValidationError.field(`sshKeys[${i}]`, `longer than ${MAX_SSH_KEY_CHARS} characters`);
    }
    if (!SSH_KEY.test(key.trim())) {
      throw ValidationError.field(`sshKeys[${i}]`, "not an OpenSSH public key line");
    }
  }
  if (spec.passwordHash !== undefined && spec.passwordHash.length > MAX_PASSWORD_HASH_CHARS) {
    throw ValidationError.field(
      "passwordHash",
      `longer than ${MAX_PASSWORD_HASH_CHARS} characters`,
    );
  }
  // The message never echoes the value: a mistyped plain password must not land in errors.
  if (spec.passwordHash !== undefined && !PASSWORD_HASH.test(spec.passwordHash)) {
    throw ValidationError.field(
      "passwordHash",
      "must be a crypt(3) hash such as $6$salt$... (never a plain password)",
    );
  }
  if ((spec.sshKeys?.length || spec.passwordHash) && !spec.user) {
    throw ValidationError.field("user", "--ssh-key and --password-hash need --user");
  }
  if (spec.userData !== undefined) parseUserData(spec.userData);
  return { ...spec, sshKeys: spec.sshKeys?.map((k) => k.trim()) };
}

function parseUserData(text: string): Record<string, unknown> | null {
  if (new TextEncoder().encode(text).length > MAX_USER_DATA) {
    throw ValidationError.field("userData", `larger than ${MAX_USER_DATA} bytes`);
  }
  if (text.startsWith("#!")) return null;
  if (!text.startsWith("#cloud-config")) {
    throw ValidationError.field(
      "userData",
      "must start with #cloud-config (YAML) or #! (a script)",
    );
  }
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    const first = String((err as Error).message).split("\n")[0];
    throw ValidationError.field("userData", `invalid YAML: ${first}`);
  }
  if (doc !== null && (typeof doc !== "object" || Array.isArray(doc))) {
    throw ValidationError.field("userData", "#cloud-config must be a YAML mapping");
  }
  return (doc ?? {}) as Record<string, unknown>;
}

/** Merges the flags into the operator's #cloud-config (flags win for the user they name). */
export function renderSeed(
  vm: { name: string; uuid: string },
  spec: CloudInitSpec,
): SeedFiles {
  const base = spec.userData !== undefined ? parseUserData(spec.userData) : {};
  let userData: string;
  if (base === null) {
    userData = spec.userData!;
  } else {
    const doc: Record<string, unknown> = { ...base };
    if (spec.user) {
      const user: Record<string, unknown> = {
        name: spec.user,
        shell: "/bin/bash",
        sudo: "ALL=(ALL) NOPASSWD:ALL",
        groups: ["sudo"],
      };
      if (spec.sshKeys?.length) user.ssh_authorized_keys = spec.sshKeys;
      if (spec.passwordHash) {
        user.passwd = spec.passwordHash;
        user.lock_passwd = false;
      }
      const others = Array.isArray(doc.users) ? doc.users : ["default"];
      doc.users = [...others, user];
      if (spec.passwordHash) doc.ssh_pwauth = true;
    }
    // No folding: a long runcmd line stays one line, as small cloud-config readers (the test
    // guest's) expect; folded plain scalars are valid YAML but gain nothing here.
    userData = "#cloud-config\n" + stringify(doc, { lineWidth: 0 });
  }
  return {
    "user-data": userData,
    "meta-data": stringify({ "instance-id": vm.uuid, "local-hostname": vm.name }),
    "network-config": stringify({
      version: 2,
      ethernets: { all: { match: { name: "e*" }, dhcp4: true } },
    }),
  };
}

/**
 * The cloud-init secrets (password hash, user-data, which often carries
 * credentials) replaced by {@link REDACTED}; the user name and SSH public
 * keys stay visible. Returns `spec` itself when there is nothing to hide.
 */
export function redactCloudInit<T extends CloudInitSpec | null | undefined>(spec: T): T {
  if (!spec || (spec.passwordHash === undefined && spec.userData === undefined)) return spec;
  const out: CloudInitSpec = { ...spec };
  if (out.passwordHash !== undefined) out.passwordHash = REDACTED;
  if (out.userData !== undefined) out.userData = REDACTED;
  return out as T;
}

/**
 * A VM record as a caller of `role` may see it: only admins see the
 * cloud-init password hash and user-data. Works on anything with a
 * `cloudInit` field (records, create results); other values pass through.
 */
export function redactVm<T>(vm: T, role: "admin" | "operator" | "viewer"): T {
  if (role === "admin" || !vm || typeof vm !== "object" || !("cloudInit" in vm)) return vm;
  const ci = (vm as { cloudInit?: CloudInitSpec | null }).cloudInit;
  const redacted = redactCloudInit(ci);
  return redacted === ci ? vm : { ...vm, cloudInit: redacted };
}
