/**
 * OVN central's ovn-northd is active/standby across the voters (host/ovs/ovn_cluster.ts): three
 * voter hosts with networking, each in its own network namespace. The host whose ovn-northd
 * holds the southbound lock (active) is first paused (SIGSTOP of its node process and its
 * ovn-northd: a hung host), then, later, the active one is killed outright (SIGKILL of
 * everything in its namespace: node, QEMU, OVS and OVN daemons). Each time a standby northd
 * becomes active and a NIC made after the fault is realized: a new guest gets its DHCP lease
 * (OVN's DHCP answers come from logical flows that only northd computes) and pings a guest on
 * another surviving host.
 */
import { type NetCluster, startNetCluster } from "../bench/lib/net_cluster.ts";
import { guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { assertEquals } from "../core/testing/assert.ts";
import { eventually, step } from "./support/api.ts";
import { createPinger, leased, pingsFrom } from "./support/net_guests.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

const SUBNET = "10.94.0";
const HOSTS = ["n1", "n2", "n3"];

testWithTimeout({
  name: "networks: the ovn-northd leader host paused, then killed; a standby takes over",
  timeoutMs: 12 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  let net = null as NetCluster | null;
  const n = () => net!;
  const vms: string[] = [];
  /** Every host's northd status, for the hosts in `among`. */
  const statuses = async (among: string[]) =>
    Object.fromEntries(await Promise.all(among.map(async (h) => [h, await n().northdStatus(h)])));
  /** Waits until exactly one of `among` is active and the others standby; the active one. */
  const oneActive = (among: string[], timeoutMs = 60_000) =>
    eventually(`one active ovn-northd among ${among.join(", ")}`, async () => {
      const s = await statuses(among);
      const active = among.filter((h) => s[h] === "active");
      const standby = among.filter((h) => s[h] === "standby");
      return active.length === 1 && standby.length === among.length - 1 ? active[0] : undefined;
    }, timeoutMs);
  const northdPid = async (h: string) =>
    Number(
      (await Deno.readTextFile(`${n().cluster.node(h).dataDir}/ovn/run/ovn-northd.pid`)
        .catch(() => "0")).trim(),
    );
  /** Waits until the cluster (asked through a node still up) has a leader other than `not`. */
  const leaderOtherThan = (not: string) =>
    eventually(`a novactl leader other than ${not}`, async () => {
      const r = await n().api<{ leader?: string }>("/api/v1/cluster");
      return r.body?.leader && r.body.leader !== not ? r.body.leader : undefined;
    }, 60_000);

  try {
    let active = "";
    await step(t, "three voter hosts, OVN central on each, one northd active", async () => {
      const t0 = performance.now();
      net = await startNetCluster({ prefix: "novactl-northd-", hosts: 3, voters: 3 });
      // A voter restarts its northd when the member list changes: settled once each one
      // runs with all three southbound remotes (until then the lock moves about).
      await eventually("every northd connected to all three members", async () => {
        for (const h of HOSTS) {
          const pid = await northdPid(h);
          const cmd = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
          if ((cmd.match(/:6642\b/g) ?? []).length !== 3) return false;
        }
        return true;
      }, 60_000);
      active = await oneActive(HOSTS);
      console.log(
        `3 voters with networking in ${Math.round(performance.now() - t0)} ms; ` +
          `northd: ${JSON.stringify(await statuses(HOSTS))}`,
      );
      await n().ok(...guestImportArgs(guest, "guest"));
      await n().ok("network", "create", "blue", "--subnet", `${SUBNET}.0/24`);
    });

    const standbys = () => HOSTS.filter((h) => h !== active);
    let g0Host = "";
    await step(t, "a guest on a standby host before any fault", async () => {
      g0Host = standbys()[0];
      await createPinger(n(), { name: "g0", node: g0Host, nic: `blue,ip=${SUBNET}.10` });
      vms.push("g0");
      await leased(n(), "g0", `${SUBNET}.10`);
    });

    let paused = "";
    await step(t, "the active northd's host paused (node process and ovn-northd)", async () => {
      paused = active;
      assertEquals(await n().northdStatus(paused), "active");
      const t0 = performance.now();
      await n().pauseHost(paused);
      active = await oneActive(standbys(), 90_000);
      console.log(
        `${paused} paused; ${active}'s northd active after ${
          Math.round(performance.now() - t0)
        } ms`,
      );
      await leaderOtherThan(paused);
    });

    // Neither the paused host nor the one whose northd is active now: it survives the kill below.
    const third = HOSTS.find((h) => h !== paused && h !== active)!;
    await step(t, "while it is paused, a new guest gets its lease and pings g0", async () => {
      const t0 = performance.now();
      await createPinger(n(), {
        name: "ga",
        node: third,
        nic: `blue,ip=${SUBNET}.11`,
        peer: `${SUBNET}.10`,
      });
      vms.push("ga");
      await leased(n(), "ga", `${SUBNET}.11`);
      await pingsFrom(n(), "ga", `${SUBNET}.10`);
      console.log(`ga on ${third}: created, leased and pinging in ${ms(t0)} ms`);
    });

    await step(t, "the paused host continued: its northd stays standby", async () => {
      await n().resumeHost(paused);
      assertEquals(await oneActive(HOSTS), active);
    });

    let killed = "";
    await step(t, "the active northd's host killed (everything in its namespace)", async () => {
      killed = active;
      assertEquals(await n().northdStatus(killed), "active");
      const t0 = performance.now();
      await n().killHost(killed);
      const survivors = HOSTS.filter((h) => h !== killed);
      active = await oneActive(survivors, 90_000);
      console.log(
        `${killed} killed; ${active}'s northd active after ${ms(t0)} ms ` +
          `(${JSON.stringify(await statuses(survivors))})`,
      );
      await leaderOtherThan(killed);
    });

    await step(t, "after the kill, a new guest gets its lease and pings ga", async () => {
      // On the other survivor than ga's, so the ping crosses hosts.
      const host = HOSTS.find((h) => h !== killed && h !== third)!;
      const t0 = performance.now();
      await createPinger(n(), {
        name: "gb",
        node: host,
        nic: `blue,ip=${SUBNET}.12`,
        peer: `${SUBNET}.11`,
      });
      vms.push("gb");
      await leased(n(), "gb", `${SUBNET}.12`);
      await pingsFrom(n(), "gb", `${SUBNET}.11`);
      console.log(`gb on ${host}: created, leased and pinging ga in ${ms(t0)} ms`);
    });
  } catch (err) {
    await net?.diagnose(vms).catch((e) => console.error("diagnose:", e));
    throw err;
  } finally {
    await net?.stop();
  }
});

function ms(t0: number): number {
  return Math.round(performance.now() - t0);
}
