/**
 * NIC hot-plug through the product path, on real guests: two nodes in two
 * network namespaces (bench/lib/net_cluster.ts), a running VM with a NIC on
 * one network. `vm nic add --wait` gives it a second NIC on another network: the
 * guest has the interface (`/sys/class/net`) with the MAC IPAM chose by the time it returns,
 * and gets its address from OVN's DHCP. The VM then live-migrates with its
 * hot-plugged NIC (the destination starts QEMU with it on the same PCIe
 * port), and `vm nic remove --wait` takes it out again: gone from the guest, its tap
 * from the host's bridge, its logical port from OVN. Bad input on a running
 * VM is refused with the field named, and nothing changes.
 */
import { type NetCluster, startNetCluster } from "../bench/lib/net_cluster.ts";
import { guestImportArgs, scriptUserData, testGuest } from "../bench/lib/guest.ts";
import { tapName } from "../host/ovs/nic.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli, eventually, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

interface Nic {
  network: string;
  ip: string;
  mac: string;
  index: number;
  /** In the running guest (api/routes/vm_nics.ts). */
  plugged?: boolean | null;
}

/**
 * The guest's side: DHCP on every ethN that appears, and once a second a line
 * `NV-NETS eth0,MAC,IP/PREFIX eth1,MAC,...` of what it has.
 */
const WATCHER = `while :; do
  for i in /sys/class/net/eth*; do
    n=\${i##*/}
    [ -e /run/dh.$n ] && continue
    touch /run/dh.$n
    udhcpc -i $n -s /usr/share/udhcpc/default.script -t 9 -T 1 -n -q >/dev/null 2>&1 &
  done
  line=
  for i in /sys/class/net/eth*; do
    n=\${i##*/}
    a=$(ip -4 -o addr show $n | awk '{print $4}')
    line="$line $n,$(cat $i/address),$a"
  done
  echo "NV-NETS$line"
  sleep 1
done
`;

/** The guest's interfaces as its last NV-NETS line lists them: MAC → address ("" if none). */
function guestNets(consoleText: string): Map<string, string> {
  const lines = [...consoleText.matchAll(/NV-NETS((?: \S+)*)\s*$/gm)];
  const last = lines.at(-1)?.[1] ?? "";
  return new Map(
    last.trim().split(/\s+/).filter(Boolean).map((e) => {
      const [, mac, ip] = e.split(",");
      return [mac, ip ?? ""];
    }),
  );
}

testWithTimeout({
  name: "networks: a NIC hot-plugged into a running guest gets its address, migrates, and goes",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  let net = null as NetCluster | null;
  const ok = (...args: string[]) => net!.ok(...args);
  const run = (...args: string[]) =>
    cli([...args, "--server", net!.url(), "--token", net!.cluster.adminToken]);
  const nicsOf = async () => JSON.parse(await ok("vm", "nic", "list", "hc", "-o", "json")).nics;
  /** The NICs' recorded fields, without what follows the guest (address check, plugged). */
  const recordedNics = async () =>
    (await nicsOf() as Record<string, unknown>[]).map((
      { guestIps: _g, ipStatus: _s, plugged: _p, ...n },
    ) => n);
  const nets = async () => guestNets(await net!.consoleOf("hc"));
  /**
   * The guest's interfaces as it lists them in the first NV-NETS line it began after this call
   * (the second one printed after it: the first may have been read before).
   */
  const nextLook = async () => {
    const seen = (await net!.consoleOf("hc")).length;
    const text = await eventually("the guest's next two looks", async () => {
      const t = await net!.consoleOf("hc");
      return t.slice(seen).split("NV-NETS").length > 3 ? t : undefined;
    }, 30_000);
    return guestNets("NV-NETS" + text.slice(seen).split("NV-NETS")[2]);
  };
  const ports = async (node: string) =>
    (await net!.sh(node, ["ovs-vsctl", "list-ports", "br-int"])).split("\n");
  let uuid = "";
  let added: Nic | null = null;

  try {
    await step(t, "a running VM with a NIC on blue", async () => {
      net = await startNetCluster({ prefix: "novactl-nichp-", hosts: 2, voters: 1 });
      await ok(...guestImportArgs(guest, "guest"));
      await ok("network", "create", "blue", "--type", "overlay", "--subnet", "10.95.0.0/24");
      await ok("network", "create", "red", "--type", "overlay", "--subnet", "10.96.0.0/24");
      const dir = await Deno.makeTempDir();
      try {
        await Deno.writeTextFile(`${dir}/hc.yaml`, scriptUserData(WATCHER));
        await ok(
          ...["vm", "create", "hc", "--image", "guest", "--memory", "128M", "--node", "n1"],
          ...["--nic", "blue", "--user-data", `${dir}/hc.yaml`, "--wait"],
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      uuid = (await net.api<{ uuid: string }>("/api/v1/vms/hc")).body.uuid;
      const [blue] = await nicsOf() as Nic[];
      await eventually(
        "the guest holds its blue address",
        async () => (await nets()).get(blue.mac) === `${blue.ip}/24` || undefined,
        120_000,
      );
    });

    await step(t, "vm nic add: the guest sees a new interface and leases its address", async () => {
      const t0 = performance.now();
      // --wait returns once the guest's driver set the NIC up (host/plugged_devices.ts): the
      // guest's first look after that already lists the interface.
      added = JSON.parse(
        await ok("vm", "nic", "add", "hc", "red", "--wait", "--timeout", "2m", "-o", "json"),
      ) as Nic;
      assertEquals([added.network, added.index, added.ip, added.plugged], [
        "red",
        1,
        "10.96.0.2",
        true,
      ]);
      const appeared = performance.now() - t0;
      assert((await nextLook()).has(added.mac), "the guest has the interface when --wait returns");
      await eventually(
        "it gets its IPAM address from OVN's DHCP",
        async () => (await nets()).get(added!.mac) === `${added!.ip}/24` || undefined,
        60_000,
      );
      console.log(
        `hot-plug: interface in the guest after ${Math.round(appeared)} ms, leased after ${
          Math.round(performance.now() - t0)
        } ms`,
      );
      assert((await ports("n1")).includes(tapName(uuid, 1)), "its tap on n1's br-int");
      assertEquals((await nicsOf()).length, 2);
    });

    await step(t, "the VM live-migrates with its hot-plugged NIC", async () => {
      const before = JSON.stringify([...(await nets())].sort());
      const op = JSON.parse(await ok("vm", "migrate", "hc", "--to", "n2", "-o", "json"));
      assertEquals(op.state, "succeeded", JSON.stringify(op));
      assert((await ports("n2")).includes(tapName(uuid, 1)), "its tap on n2's br-int");
      assert(!(await ports("n1")).includes(tapName(uuid, 1)), "and no longer on n1's");
      const lines = async () => (await net!.consoleOf("hc")).split("NV-NETS").length;
      const count = await lines();
      await eventually(
        "the guest reports again, from n2",
        async () => (await lines()) >= count + 3 || undefined,
        30_000,
      );
      assertEquals(JSON.stringify([...(await nets())].sort()), before, "both NICs, same addresses");
    });

    await step(
      t,
      "bad input on the running VM: refused with the field named; nothing changes",
      async () => {
        const before = JSON.stringify(await recordedNics());
        const [blue] = await nicsOf() as Nic[];
        const refused = async (args: string[], field: RegExp) => {
          const r = await run("vm", "nic", ...args);
          assertEquals(r.code, 1, `${args.join(" ")}: ${r.stdout} ${r.stderr}`);
          assert(field.test(r.stderr), `${args.join(" ")}: ${r.stderr}`);
          assertEquals(r.stderr.trim().split("\n").length, 1, "one line");
        };
        await refused(["add", "hc", "green"], /nic\.network.*green/);
        await refused(["add", "hc", `red,ip=${added!.ip}`], /nic\.ip.*10\.96\.0\.2/);
        await refused(["add", "hc", `blue,ip=${blue.ip}`], /nic\.ip/);
        await refused(["add", "hc", "blue,sg=nope"], /nic\.securityGroups.*nope/);
        await refused(["remove", "hc", "5"], /nic.*no NIC 5/);
        await refused(["remove", "hc", "02:00:00:00:00:99"], /nic.*no NIC/);
        assertEquals(JSON.stringify(await recordedNics()), before);
        const bad = await run("vm", "nic", "add", "hc", "red,colour=x");
        assertEquals(bad.code, 2, bad.stderr);
      },
    );

    await step(
      t,
      "vm nic remove: the interface leaves the guest, the tap and the port go",
      async () => {
        const t0 = performance.now();
        const remove = ["vm", "nic", "remove", "hc", added!.mac, "--wait", "--timeout", "2m"];
        const r = JSON.parse(await ok(...remove, "-o", "json"));
        assertEquals([r.removed.index, r.plugged], [1, false]);
        assert(!(await nextLook()).has(added!.mac), "gone from the guest when --wait returns");
        console.log(
          `hot-unplug: gone from the guest after ${Math.round(performance.now() - t0)} ms`,
        );
        await eventually(
          "its tap gone from n2's br-int",
          async () => !(await ports("n2")).includes(tapName(uuid, 1)) || undefined,
          30_000,
        );
        await eventually(
          "its logical port gone from OVN",
          async () =>
            !(await net!.nbctl("--bare", "--columns=name", "list", "Logical_Switch_Port"))
              .includes("nv-hc-1") || undefined,
          10_000,
        );
        const red = (await net!.api<{ ports: unknown[] }>("/api/v1/networks/red")).body;
        assertEquals(red.ports, [], "its address freed");
        assertEquals(
          (await nicsOf()).map((n: Nic) => n.index),
          [0],
        );
        const [blue] = await nicsOf() as Nic[];
        assertEquals((await nets()).get(blue.mac), `${blue.ip}/24`, "the other NIC untouched");
      },
    );
  } catch (err) {
    await net?.diagnose(["hc"]).catch((e) => console.error("diagnose:", e));
    throw err;
  } finally {
    await net?.stop();
  }
});
