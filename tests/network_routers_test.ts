/**
 * Outside access through the product path: three real nodes, each in its own
 * network namespace; n2 and n3 map `physnet1` to `br-ex` (`node set
 * --bridge-mapping`), and an "upstream" namespace (bench/lib/upstream.ts)
 * bridges a veth into each one's `br-ex`, with the upstream host at
 * 192.0.2.1 serving HTTP (its CGI answers with the client address it sees).
 * A flat network `ext` on physnet1 is the uplink; router r1 connects the
 * overlay `blue` to it. One guest on n1 (which maps nothing: its traffic
 * reaches the outside only through a gateway host):
 * - SNAT: it reaches the upstream host (HTTP and one guest's ping), which
 *   sees it as the router's uplink address;
 * - floating IP: the upstream reaches the guest's TCP listener and pings it
 *   at the floating IP, and the guest's own traffic now leaves as that address;
 * - failover: the host carrying the gateway (the first of `router show`'s
 *   gateway hosts) dies (every process in its namespace killed): the other
 *   gateway host takes over and both directions resume; the time is printed;
 * - bad input through the product's REST API: each refused, nothing changed.
 */
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { type NetCluster, startNetCluster } from "../bench/lib/net_cluster.ts";
import { Upstream } from "../bench/lib/upstream.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { eventually, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface Vm {
  nics: { network: string; ip: string; mac: string }[];
  guest?: { interfaces?: { mac: string; addresses: string[] }[] };
}

interface RouterView {
  uplinkIp: string;
  networks: string[];
  gatewayChassis: { node: string; priority: number }[];
}

const UPSTREAM = "192.0.2.1";
const GUEST_IP = "10.93.0.10";
const GATEWAY_HOSTS = ["n2", "n3"];

/**
 * Client addresses the upstream's CGI reported to the guest, in order (busybox httpd listens on
 * IPv6 and writes an IPv4 client as `[::ffff:a.b.c.d]`).
 */
const seenAs = (consoleText: string) =>
  [...consoleText.matchAll(/NV-FROM-\[?(?:::ffff:)?([\d.]+)\]?/g)].map((m) => m[1]);
/** Echo replies the guest got from the upstream host. */
const upstreamPings = (consoleText: string) =>
  consoleText.split(`64 bytes from ${UPSTREAM}`).length - 1;

testWithTimeout({
  name: "routers: SNAT to an uplink, a floating IP reachable from upstream, gateway failover",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  let net = null as NetCluster | null;
  let up = null as Upstream | null;
  const n = () => net!;
  const g1 = () => n().consoleOf("g1", 1 << 16);
  let fip = "";
  let httpRoot = "";
  let uplinkIp = "";
  /** One TCP connection from upstream to the guest's listener at the floating IP. */
  const fromUpstream = async () =>
    (await up!.exec(["busybox", "nc", "-w", "1", fip, "8080"])).out.includes("NV-TCP-OPEN-8080");

  try {
    await step(t, "three hosts; n2 and n3 map physnet1 and are wired to upstream", async () => {
      const t0 = performance.now();
      net = await startNetCluster({ prefix: "novactl-rt-", hosts: 3, voters: 1 });
      console.log(`3 hosts with networking in ${Math.round(performance.now() - t0)} ms`);
      up = await Upstream.create(n().lab, `${UPSTREAM}/24`);
      const dir = httpRoot = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-up-" });
      await Deno.mkdir(`${dir}/cgi-bin`);
      await Deno.writeTextFile(
        `${dir}/cgi-bin/from`,
        '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nNV-FROM-%s\\n" "$REMOTE_ADDR"\n',
        { mode: 0o755 },
      );
      up.spawn(["busybox", "httpd", "-f", "-p", "8000", "-h", dir]);
      for (const h of GATEWAY_HOSTS) {
        await up.connect(n().cluster.node(h).namespace!);
        await n().ok("node", "set", h, "--bridge-mapping", "physnet1:br-ex");
      }
      for (const h of GATEWAY_HOSTS) {
        // The host makes the bridge it was told to map; the uplink veth is the operator's part.
        await eventually(`${h} made br-ex`, async () => {
          return (await n().sh(h, ["ovs-vsctl", "list-br"])).split("\n").includes("br-ex") ||
            undefined;
        }, 15_000);
        await n().sh(h, ["ovs-vsctl", "--may-exist", "add-port", "br-ex", "ext0"]);
        const mappings = await n().sh(h, [
          "ovs-vsctl",
          "get",
          "open_vswitch",
          ".",
          "external_ids:ovn-bridge-mappings",
        ]);
        assertEquals(mappings.trim(), '"physnet1:br-ex"');
      }
      await n().ok(...guestImportArgs(guest, "guest"));
    });

    await step(t, "an uplink, an overlay behind router r1, a guest on n1", async () => {
      await n().ok(
        ...["network", "create", "ext", "--type", "flat", "--physnet", "physnet1"],
        ...["--subnet", "192.0.2.0/24", "--gateway", UPSTREAM, "--no-dhcp"],
      );
      await n().ok("network", "create", "blue", "--subnet", "10.93.0.0/24");
      await n().ok("router", "create", "r1", "--uplink", "ext");
      await n().ok("router", "attach", "r1", "blue");
      const r = JSON.parse(await n().ok("router", "show", "r1", "-o", "json")) as RouterView;
      uplinkIp = r.uplinkIp;
      assertEquals(r.networks, ["blue"]);
      assertEquals(r.gatewayChassis.map((g) => g.node).sort(), GATEWAY_HOSTS);
      const dir = await Deno.makeTempDir();
      try {
        const ud = `${dir}/g1.yaml`;
        const lines = [
          // Short lines: the test guest's YAML reader cannot join folded ones.
          // HTTP by hand: the test guest's static busybox wget segfaults (glibc NSS lookup).
          `while :;do (echo GET /cgi-bin/from HTTP/1.0;echo)|nc -w1 ${UPSTREAM} 8000;sleep .3;done &`,
          `ping -i .5 ${UPSTREAM} &`,
          "nc -ll -p 8080 -e echo NV-TCP-OPEN-8080 &",
        ];
        await Deno.writeTextFile(
          ud,
          `#cloud-config\nruncmd:\n${lines.map((l) => `  - "${l}"\n`).join("")}`,
        );
        await n().ok(
          ...["vm", "create", "g1", "--image", "guest", "--memory", "128M", "--node", "n1"],
          ...["--nic", `blue,ip=${GUEST_IP}`, "--user-data", ud, "--wait"],
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      await eventually("g1's agent reports its address", async () => {
        const v = (await n().api<Vm>("/api/v1/vms/g1")).body;
        const eth = v.guest?.interfaces?.find((i) => i.mac === v.nics[0].mac);
        return eth?.addresses.includes(`${GUEST_IP}/24`) || undefined;
      }, 120_000);
    });

    await step(t, "SNAT: the guest reaches upstream, seen as the router's address", async () => {
      const from = await eventually("the upstream answers the guest's HTTP", async () => {
        const seen = seenAs(await g1());
        return seen.length ? seen : undefined;
      }, 60_000);
      assertEquals([...new Set(from)], [uplinkIp], "the upstream saw another address");
      await eventually("the upstream answers the guest's pings", async () => {
        return upstreamPings(await g1()) >= 2 || undefined;
      }, 30_000);
      // Nothing reaches the guest from outside without a floating IP.
      const direct = await up!.exec(["busybox", "nc", "-w", "1", GUEST_IP, "8080"]);
      assert(!direct.out.includes("NV-TCP-OPEN"), "the guest's own address answered upstream");
    });

    await step(t, "a floating IP: upstream reaches the guest, the guest leaves as it", async () => {
      fip = (await n().ok("fip", "create", "--network", "ext")).trim().split("\n").pop()!;
      assert(/^192\.0\.2\.\d+$/.test(fip) && fip !== uplinkIp, fip);
      const t0 = performance.now();
      await n().ok("fip", "attach", fip, "g1");
      await eventually(`upstream reaches g1 at ${fip}:8080`, fromUpstream, 30_000);
      console.log(
        `floating IP: first TCP answer ${Math.round(performance.now() - t0)} ms after attach`,
      );
      const ping = await up!.exec(["busybox", "ping", "-c", "3", "-W", "1", fip]);
      assert(/[1-3] packets received/.test(ping.out), ping.out);
      await eventually("the guest's own traffic leaves as the floating IP", async () => {
        return seenAs(await g1()).at(-1) === fip || undefined;
      }, 30_000);
      const list = JSON.parse(await n().ok("fip", "list", "-o", "json"));
      assertEquals(list.floatingIps.map((f: { ip: string; vm: string }) => [f.ip, f.vm]), [
        [fip, "g1"],
      ]);
    });

    await step(t, "the active gateway host dies: the other takes over", async () => {
      const r = JSON.parse(await n().ok("router", "show", "r1", "-o", "json")) as RouterView;
      const [active, standby] = r.gatewayChassis.map((g) => g.node);
      // Which host really carries it: the chassisredirect port's binding.
      const sb = `unix:${n().cluster.node("n1").dataDir}/ovn/run/ovnsb_db.sock`;
      const boundTo = async () => {
        const out = await new Deno.Command("ovn-sbctl", {
          args: [
            `--db=${sb}`,
            "--bare",
            "--columns=chassis",
            "find",
            "Port_Binding",
            "logical_port=cr-nvr-r1.uplink",
          ],
          stdout: "piped",
        }).output();
        const uuid = new TextDecoder().decode(out.stdout).trim();
        if (!uuid) return "";
        const name = await new Deno.Command("ovn-sbctl", {
          args: [`--db=${sb}`, "--bare", "--columns=name", "list", "Chassis", uuid],
          stdout: "piped",
        }).output();
        return new TextDecoder().decode(name.stdout).trim();
      };
      assertEquals(await boundTo(), active, "the highest-priority host carries the gateway");
      const seen = seenAs(await g1()).length;
      const t0 = performance.now();
      // Every process in its namespace: the node, its OVS and ovn-controller.
      const pids = await new Deno.Command("ip", {
        args: ["netns", "pids", n().cluster.node(active).namespace!],
        stdout: "piped",
      }).output();
      for (const pid of new TextDecoder().decode(pids.stdout).split("\n").map(Number)) {
        if (pid > 0) Deno.kill(pid, "SIGKILL");
      }
      await eventually(`upstream reaches g1 at ${fip} through ${standby}`, fromUpstream, 60_000);
      const inbound = performance.now() - t0;
      await eventually("the guest reaches upstream again", async () => {
        return seenAs(await g1()).length > seen + 1 || undefined;
      }, 60_000);
      const outbound = performance.now() - t0;
      console.log(
        `gateway failover ${active} → ${standby}: upstream → FIP back after ${
          Math.round(inbound)
        } ms, guest → upstream after ${Math.round(outbound)} ms`,
      );
      // The data path moves on BFD; the standby's ovn-controller records its claim in the
      // southbound DB after, which waits for that DB's own Raft when the dead host was its leader.
      await eventually(`the southbound DB binds the gateway to ${standby}`, async () => {
        const bound = await boundTo();
        if (bound !== standby) throw new Error(`bound to ${bound || "nothing"}`);
        return true;
      }, 60_000);
    });

    await step(t, "bad input through the REST API: refused, nothing changed", async () => {
      const state = async () =>
        JSON.stringify([
          (await n().api("/api/v1/routers")).body,
          (await n().api("/api/v1/floating-ips")).body,
          (await n().api("/api/v1/networks")).body,
        ]);
      const before = await state();
      const cases: [string, string, unknown, number][] = [
        ["POST", "/api/v1/networks", {
          name: "v9",
          type: "vlan",
          vlan: 4095,
          physnet: "physnet1",
          subnet: "192.0.3.0/24",
        }, 400],
        ["POST", "/api/v1/floating-ips", { network: "blue" }, 400],
        ["POST", "/api/v1/floating-ips", { network: "ext", ip: uplinkIp }, 409],
        ["POST", "/api/v1/routers", { name: "r2", uplink: "blue" }, 400],
        ["POST", "/api/v1/routers/r1/networks", { network: "ext" }, 409],
        ["DELETE", "/api/v1/routers/r1/networks/blue", undefined, 409],
        ["DELETE", "/api/v1/networks/ext", undefined, 409],
      ];
      for (const [method, path, body, status] of cases) {
        const r = await n().api(path, { method, body });
        assertEquals(
          r.status,
          status,
          `${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`,
        );
      }
      assertEquals(await state(), before);
    });
  } catch (err) {
    await net?.diagnose(["g1"]).catch((e) => console.error("diagnose:", e));
    throw err;
  } finally {
    await up?.destroy();
    await net?.stop();
    if (httpRoot) await Deno.remove(httpRoot, { recursive: true }).catch(() => {});
  }
});
