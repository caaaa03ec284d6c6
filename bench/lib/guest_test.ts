import { assert, assertEquals } from "../../core/testing/assert.ts";
import { renderSeed } from "../../core/cloudinit/mod.ts";
import { scriptUserData } from "./guest.ts";

Deno.test("scriptUserData: novactl's seed keeps every runcmd line whole, so the script decodes", () => {
  const script = "ip link set dev eth0 mtu 1442\n" +
    "until ip -4 addr show dev eth0 | grep -q inet; do sleep 0.2; done\n" +
    "timeout 13 nc 10.96.0.20 5001 </dev/zero\n";
  const seed = renderSeed({ name: "g", uuid: "u" }, { userData: scriptUserData(script) });
  const lines = seed["user-data"].split("\n");
  const chunks = lines.filter((l) => l.startsWith("  - echo -n "));
  assert(chunks.length > 1);
  for (const line of chunks) assert(line.endsWith(" >>/run/nv.b64"), `folded: ${line}`);
  const b64 = chunks.map((l) => l.split(" ")[5]).join("");
  assertEquals(
    new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))),
    script,
  );
});
