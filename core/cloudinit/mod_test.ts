import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { ValidationError } from "../errors/mod.ts";
import {
  MAX_PASSWORD_HASH_CHARS,
  MAX_SSH_KEY_CHARS,
  MAX_SSH_KEYS,
  MAX_USER_DATA_BYTES,
  redactCloudInit,
  REDACTED,
  redactVm,
  renderSeed,
  validateCloudInit,
} from "./mod.ts";
import { parse } from "yaml";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbT0mBzC4r1 ops@example";

testWithTimeout({
  name: "cloud-init: user, key and hash merge into the operator's cloud-config",
  timeoutMs: 2 * MINUTE,
}, () => {
  const spec = validateCloudInit({
    user: "ops",
    sshKeys: [KEY],
    passwordHash: "$6$salt$abcdef",
    userData: "#cloud-config\npackages: [htop]\n",
  });
  const seed = renderSeed({ name: "web1", uuid: "u-1" }, spec);
  assertEquals(seed["user-data"].startsWith("#cloud-config\n"), true);
  const doc = parse(seed["user-data"]);
  assertEquals(doc.packages, ["htop"]);
  assertEquals(doc.users[1].name, "ops");
  assertEquals(doc.users[1].ssh_authorized_keys, [KEY]);
  assertEquals(parse(seed["meta-data"]), { "instance-id": "u-1", "local-hostname": "web1" });
});

testWithTimeout(
  { name: "cloud-init: malformed input names the field", timeoutMs: 2 * MINUTE },
  () => {
    const field = (f: () => unknown) => {
      const err = assertThrows(f, ValidationError) as ValidationError;
      return err.issues[0].field;
    };
    assertEquals(
      field(() => validateCloudInit({ userData: "#cloud-config\nusers: [a\n" })),
      "userData",
    );
    assertEquals(field(() => validateCloudInit({ userData: "hello" })), "userData");
    assertEquals(
      field(() => validateCloudInit({ userData: "#cloud-config\n- a\n- b\n" })),
      "userData",
    );
    assertEquals(field(() => validateCloudInit({ user: "Root!" })), "user");
    assertEquals(field(() => validateCloudInit({ user: "ops", sshKeys: ["nope"] })), "sshKeys[0]");
    assertEquals(
      field(() => validateCloudInit({ user: "ops", passwordHash: "secret" })),
      "passwordHash",
    );
    assertEquals(field(() => validateCloudInit({ sshKeys: [KEY] })), "user");
  },
);

testWithTimeout({
  name: "cloud-init caps: key count and length, hash length, user-data size",
  timeoutMs: 2 * MINUTE,
}, () => {
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB me@host";
  const field = (spec: Parameters<typeof validateCloudInit>[0]) =>
    (assertThrows(() => validateCloudInit(spec), ValidationError) as ValidationError).issues[0]
      .field;
  assertEquals(field({ user: "u", sshKeys: Array(MAX_SSH_KEYS + 1).fill(key) }), "sshKeys");
  assertEquals(field({ user: "u", sshKeys: [key + "x".repeat(MAX_SSH_KEY_CHARS)] }), "sshKeys[0]");
  assertEquals(
    field({ user: "u", passwordHash: "$6$" + "x".repeat(MAX_PASSWORD_HASH_CHARS) }),
    "passwordHash",
  );
  assertEquals(field({ userData: "#!" + "x".repeat(MAX_USER_DATA_BYTES) }), "userData");
  assert(validateCloudInit({ user: "u", sshKeys: Array(MAX_SSH_KEYS).fill(key) }));
});

testWithTimeout({
  name: "cloud-init redaction: hash and user-data hidden below admin, the rest kept",
  timeoutMs: 2 * MINUTE,
}, () => {
  const spec = { user: "ops", sshKeys: ["k"], passwordHash: "$6$s$h", userData: "#!x" };
  const vm = { name: "web", cloudInit: spec };
  assertEquals(redactVm(vm, "admin"), vm);
  for (const role of ["operator", "viewer"] as const) {
    assertEquals(redactVm(vm, role).cloudInit, {
      user: "ops",
      sshKeys: ["k"],
      passwordHash: REDACTED,
      userData: REDACTED,
    });
  }
  assertEquals(vm.cloudInit.passwordHash, "$6$s$h", "the record itself is not changed");
  assertEquals(redactCloudInit({ user: "ops" }), { user: "ops" });
  assertEquals(redactCloudInit(null), null);
  assertEquals(redactVm({ name: "x", cloudInit: null }, "viewer"), { name: "x", cloudInit: null });
});

testWithTimeout({
  name: "cloud-init: a long runcmd line stays on one line of the rendered user-data",
  timeoutMs: 2 * MINUTE,
}, () => {
  const cmd = `echo -n ${"QUJD".repeat(30)} >>/run/out.b64`;
  const spec = validateCloudInit({ userData: `#cloud-config\nruncmd:\n  - ${cmd}\n` });
  const lines = renderSeed({ name: "web1", uuid: "u-1" }, spec)["user-data"].split("\n");
  assert(lines.includes(`  - ${cmd}`), `folded:\n${lines.join("\n")}`);
});
