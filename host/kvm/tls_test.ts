import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { NovaError } from "../../core/errors/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { buildQemuCredsDir, nodeDnPatterns, nodeTlsPaths } from "./tls.ts";
import { makeCa, makeNodeCert } from "./test_pki.ts";

testWithTimeout({
  name: "QEMU's creds dir: the node cert as server and client, private, and never without files",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-tls-" });
  try {
    const ca = await makeCa(`${dir}/ca`, "test CA");
    const node = await makeNodeCert(`${dir}/node`, ca, "n1");
    assertEquals(node, nodeTlsPaths(`${dir}/node`), "the agreed data-dir layout");
    const creds = await buildQemuCredsDir(node, null);
    try {
      const names = [];
      for await (const e of Deno.readDir(creds)) names.push(e.name);
      assertEquals(names.sort(), [
        "ca-cert.pem",
        "client-cert.pem",
        "client-key.pem",
        "dh-params.pem",
        "server-cert.pem",
        "server-key.pem",
      ]);
      assertEquals((await Deno.stat(creds)).mode! & 0o777, 0o700);
      assertEquals((await Deno.stat(`${creds}/server-key.pem`)).mode! & 0o777, 0o600);
      const cert = await Deno.readTextFile(node.cert);
      assertEquals(await Deno.readTextFile(`${creds}/server-cert.pem`), cert);
      assertEquals(await Deno.readTextFile(`${creds}/client-cert.pem`), cert);
    } finally {
      await Deno.remove(creds, { recursive: true });
    }
    await Deno.remove(node.key);
    const err = await assertRejects(() => buildQemuCredsDir(node, null), NovaError);
    assertEquals(err.code, "precondition_failed");
    assert(err.message.includes(node.key), err.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "a node's DN patterns match its CN only, and odd names are refused",
  timeoutMs: MINUTE,
}, () => {
  assertEquals(nodeDnPatterns("n1"), ["CN=n1", "CN=n1,*", "*,CN=n1"]);
  let refused = false;
  try {
    nodeDnPatterns("n*");
  } catch {
    refused = true;
  }
  assert(refused, "a glob character in a node name");
});
