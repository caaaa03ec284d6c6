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
const MAX_USER_DATA = 64 * 1024;

/** Throws a ValidationError naming the field; returns the normalized spec. */
export function validateCloudInit(spec: CloudInitSpec): CloudInitSpec {
  if (spec.user !== undefined && !USER.test(spec.user)) {
    throw ValidationError.field("user", `"${spec.user}" is not a valid Linux user name`);
  }
  for (const [i, key] of (spec.sshKeys ?? []).entries()) {
    if (!SSH_KEY.test(key.trim())) {
      throw ValidationError.field(`sshKeys[${i}]`, "not an OpenSSH public key line");
    }
  }
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
    userData = "#cloud-config\n" + stringify(doc);
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
