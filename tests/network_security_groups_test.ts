/**
 * Security groups through the product path, across hosts: two real nodes in
 * their own network namespaces, a guest on each, on one overlay network. The
 * target guest (gb, on n2) is in a group with no rules; the prober (ga, on
 * n1) in none. What the prober sees, as the guests print it on their consoles:
 * - no rule: its pings to gb get no answer (ingress denied), though gb got its
 *   lease from OVN's DHCP (allowed through the default drop);
 * - an ingress icmp rule added: the answers start, with no restart of
 *   anything; the time from the request to the first answer is printed;
 * - an ingress tcp rule for 8080: gb's listener on 8080 answers, the one on
 *   8081 does not, until a rule admits 8081 too (so that listener is real);
 * - the icmp rule removed: the answers stop again.
 */
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { type NetCluster, startNetCluster } from "../bench/lib/net_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { eventually, sleep, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface Vm {
  nics: { network: string; ip: string; mac: string; securityGroups?: string[] }[];
  guest?: { interfaces?: { mac: string; addresses: string[] }[] };
}

const SUBNET = "10.92.0";
const GA_IP = `${SUBNET}.10`;
const GB_IP = `${SUBNET}.11`;

/** Echo replies from gb that ga printed (busybox ping), by sequence number. */
function replies(consoleText: string): number[] {
  const re = new RegExp(`64 bytes from ${GB_IP.replace(/\./g, "\\.")}: seq=(\\d+)`, "g");
  return [...consoleText.matchAll(re)].map((m) => Number(m[1]));
}

/** How many times ga got an answer from gb's listener on `port`. */
const answers = (consoleText: string, port: number) =>
  consoleText.split(`NV-TCP-OPEN-${port}`).length - 1;

testWithTimeout({
  name: "security groups: ingress denied by default, rules open ICMP and one TCP port live",
  timeoutMs: 8 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  let net: NetCluster | null = null;
  try {
    net = await startNetCluster({ prefix: "novactl-sg-", hosts: 2 });
    const n = net;
    const show = async (name: string) => (await n.api<Vm>(`/api/v1/vms/${name}`)).body;
    const ga = () => n.consoleOf("ga", 1 << 16);
    const allowTcp = (port: string) =>
      n.ok("sg", "rule", "add", "locked", "--dir", "ingress", "--proto", "tcp", "--port", port);

    await step(t, "a network, a group with no rules, a guest on each host", async () => {
      await n.ok(...guestImportArgs(guest, "guest"));
      await n.ok("network", "create", "blue", "--subnet", `${SUBNET}.0/24`);
      await n.ok("sg", "create", "locked", "--description", "gb: nothing in until a rule says so");
      const dir = await Deno.makeTempDir();
      try {
        const userData = {
          // Short lines: the test guest's YAML reader cannot join folded ones.
          ga: [
            `ping -i .2 ${GB_IP} &`,
            `while :;do for p in 8080 8081;do echo|nc -w1 ${GB_IP} $p;done;done &`,
          ],
          gb: [
            "nc -ll -p 8080 -e echo NV-TCP-OPEN-8080 &",
            "nc -ll -p 8081 -e echo NV-TCP-OPEN-8081 &",
          ],
        };
        for (
          const [name, node, nic] of [
            ["gb", "n2", `blue,ip=${GB_IP},sg=locked`],
            ["ga", "n1", `blue,ip=${GA_IP}`],
          ]
        ) {
          const ud = `${dir}/${name}.yaml`;
          const lines = userData[name as "ga" | "gb"].map((c) => `  - "${c}"\n`).join("");
          await Deno.writeTextFile(ud, `#cloud-config\nruncmd:\n${lines}`);
          await n.ok(
            ...["vm", "create", name, "--image", "guest", "--memory", "128M", "--node", node],
            ...["--nic", nic, "--user-data", ud, "--wait"],
          );
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      assertEquals((await show("gb")).nics[0].securityGroups, ["locked"]);
    });

    await step(t, "both guests get their leases; gb's group still lets DHCP through", async () => {
      for (const [name, ip] of [["ga", GA_IP], ["gb", GB_IP]]) {
        await eventually(`${name}'s agent reports ${ip}`, async () => {
          const v = await show(name);
          const eth = v.guest?.interfaces?.find((i) => i.mac === v.nics[0].mac);
          return eth?.addresses.includes(`${ip}/24`) || undefined;
        }, 120_000);
      }
    });

    await step(t, "no rule: gb answers neither ping nor TCP", async () => {
      // ga runs its probes from boot: give them time to have been answered if they could be.
      await eventually("ga probing (its TCP attempts time out)", async () => {
        return (await ga()).includes("nc: ") || undefined;
      }, 60_000).catch(() => {});
      await sleep(3_000);
      const text = await ga();
      assertEquals(replies(text), [], "gb answered a ping with no rule");
      assertEquals([answers(text, 8080), answers(text, 8081)], [0, 0]);
    });

    await step(
      t,
      "an ingress icmp rule opens ping live, nothing restarted (time printed; bench:net measures it)",
      async () => {
        const seen = replies(await ga()).length;
        const t0 = performance.now();
        const id =
          (await n.ok("sg", "rule", "add", "locked", "--dir", "ingress", "--proto", "icmp"))
            .trim();
        assert(/^r\d+$/.test(id), `rule id: ${id}`);
        const acked = performance.now() - t0;
        await eventually("gb answers ga's pings", async () => {
          return replies(await ga()).length > seen || undefined;
        }, 10_000);
        const ms = Math.round(performance.now() - t0);
        console.log(
          `icmp rule: CLI returned after ${Math.round(acked)} ms; first echo reply seen ${ms} ms ` +
            `after the request (ping every 200 ms, console polled every 100 ms)`,
        );
      },
    );

    await step(t, "a tcp 8080 rule admits 8080 and not 8081", async () => {
      await allowTcp("8080");
      await eventually(
        "gb's 8080 answers ga",
        async () => answers(await ga(), 8080) >= 2 || undefined,
        30_000,
      );
      const before = answers(await ga(), 8080);
      // Several more rounds of both ports.
      await eventually(
        "more 8080 answers",
        async () => answers(await ga(), 8080) >= before + 3 || undefined,
        30_000,
      );
      assertEquals(answers(await ga(), 8081), 0, "8081 answered without a rule");
    });

    await step(t, "8081's listener is real: a rule for it and it answers", async () => {
      await allowTcp("8081-8081");
      await eventually(
        "gb's 8081 answers ga",
        async () => answers(await ga(), 8081) >= 1 || undefined,
        30_000,
      );
    });

    await step(t, "the icmp rule removed: the pings stop being answered", async () => {
      const shown = (await n.api<{ rules: { id: string; protocol: string }[] }>(
        "/api/v1/security-groups/locked",
      )).body;
      const icmp = shown.rules.find((r) => r.protocol === "icmp")!;
      await n.ok("sg", "rule", "remove", "locked", icmp.id);
      await sleep(1_500);
      const settled = replies(await ga()).length;
      await sleep(3_000);
      assertEquals(replies(await ga()).length, settled, "gb still answers pings");
      // ... while the TCP rules still hold.
      const tcp = answers(await ga(), 8080);
      await eventually(
        "8080 still answers",
        async () => answers(await ga(), 8080) > tcp || undefined,
        30_000,
      );
    });
  } catch (err) {
    await net?.diagnose(["ga", "gb"]).catch((e) => console.error("diagnose:", e));
    throw err;
  } finally {
    await net?.stop();
  }
});
