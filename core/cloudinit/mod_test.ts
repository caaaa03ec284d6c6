import { assertEquals, assertThrows } from "../testing/assert.ts";
import { ValidationError } from "../errors/mod.ts";
import { renderSeed, validateCloudInit } from "./mod.ts";
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
