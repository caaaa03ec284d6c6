import { assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import {
  addAuthzList,
  blockdevAddNbd,
  migrateIncoming,
  nbdServerStart,
  type QmpExecutor,
} from "./commands.ts";

/** Records what would be sent to QEMU. */
function recorder(): QmpExecutor & { sent: [string, Record<string, unknown> | undefined][] } {
  const sent: [string, Record<string, unknown> | undefined][] = [];
  return {
    sent,
    execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
      sent.push([command, args]);
      return Promise.resolve(undefined as T);
    },
  };
}

testWithTimeout({
  name: "QMP commands: TLS listeners name creds and authz; authz rules; IPv6 URIs bracketed",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const q = recorder();
  await nbdServerStart(q, { host: "10.0.0.5", port: 0 }, { creds: "c", authz: "a" });
  await addAuthzList(q, "a", ["CN=n1", "CN=n1,*"]);
  await blockdevAddNbd(q, "t", { host: "10.0.0.5", port: 1234 }, "root", {
    creds: "c",
    hostname: "10.0.0.5",
  });
  await migrateIncoming(q, { host: "fd00::5", port: 0 });
  assertEquals(q.sent, [
    ["nbd-server-start", {
      addr: { type: "inet", data: { host: "10.0.0.5", port: "0" } },
      "tls-creds": "c",
      "tls-authz": "a",
    }],
    ["object-add", {
      "qom-type": "authz-list",
      id: "a",
      policy: "deny",
      rules: [
        { match: "CN=n1", policy: "allow", format: "exact" },
        { match: "CN=n1,*", policy: "allow", format: "glob" },
      ],
    }],
    ["blockdev-add", {
      driver: "nbd",
      "node-name": "t",
      server: { type: "inet", host: "10.0.0.5", port: "1234" },
      export: "root",
      "tls-creds": "c",
      "tls-hostname": "10.0.0.5",
    }],
    ["migrate-incoming", { uri: "tcp:[fd00::5]:0" }],
  ]);
});
