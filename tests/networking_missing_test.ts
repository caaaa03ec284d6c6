/**
 * `node start` on a host without Open vSwitch/OVN fails at once, naming the
 * Debian packages and `--networking off`, and leaves nothing started; with
 * `--networking off` the same host gets past that check.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

testWithTimeout({
  name: "networking: node start without the OVS/OVN binaries names the packages and the way out",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-nonet-" });
  try {
    // /usr/sbin holds ovsdb-server and ovs-vswitchd (and ip, nft) on Debian: without it they
    // are "not installed".
    const r = await cli(
      ["node", "start", "--name", "x", "--data-dir", `${dir}/d`, "--listen", "127.0.0.1:0"],
      { PATH: "/usr/bin:/bin" },
    );
    assertEquals(r.code, 1, r.stderr);
    assert(/apt-get install openvswitch-switch/.test(r.stderr), r.stderr);
    assert(/--networking off/.test(r.stderr), r.stderr);
    assertEquals(r.stderr.trim().split("\n").length, 1, "one clear line");
    const made = await Deno.stat(`${dir}/d`).then(() => true, () => false);
    assert(!made, "nothing was set up before the check");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
