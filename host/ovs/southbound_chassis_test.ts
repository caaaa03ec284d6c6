import { assert, assertEquals } from "../../core/testing/assert.ts";
import { eventually } from "../../tests/support/api.ts";
import { ovnMissing } from "./ovn.ts";
import {
  ChassisCleaner,
  type ChassisSource,
  listChassis,
  staleChassis,
} from "./southbound_chassis.ts";
import { testOvn } from "./testing.ts";

Deno.test("staleChassis: only removed members that are not members again", () => {
  assertEquals(
    staleChassis(
      ["up", "down", "gone", "back", "foreign"],
      ["up", "down", "back"],
      ["gone", "back", "never-registered"],
    ),
    ["gone"],
  );
  assertEquals(staleChassis(["a", "b"], ["a"], []), []);
});

const skip = await ovnMissing();

Deno.test({
  name: "chassis cleaner: a removed node's chassis leaves the real southbound DB, others stay",
  ignore: skip !== null,
  async fn() {
    const ovn = await testOvn("novactl-sbclean-");
    try {
      await ovn.start();
      const live = ovn.chassis.options.name; // registered by a real ovn-controller
      const sb = (args: string[]) => ovn.central.sbctl(args);
      await eventually("the live chassis", async () => (await listChassis(sb)).includes(live));
      // Hosts without a running ovn-controller: a member that is down, a removed node (with
      // its Chassis_Private, as a controller leaves it), and a chassis of another system
      // sharing this OVN.
      for (
        const [name, ip] of [["down", "127.0.0.11"], ["gone", "127.0.0.12"], [
          "foreign",
          "127.0.0.13",
        ]]
      ) {
        await sb(["chassis-add", name, "geneve", ip]);
      }
      await sb(["create", "Chassis_Private", "name=gone"]);

      const state = {
        leader: false,
        members: [live, "down"],
        removed: ["gone", "never-had-one"],
      };
      const listeners: ((r: string | null) => void)[] = [];
      const source: ChassisSource = {
        isLeader: () => state.leader,
        members: () => state.members,
        removedMembers: () => state.removed,
        southbound: () => ovn.central.southbound,
        onChange: (l) => {
          listeners.push(l);
          return () => {};
        },
      };
      const cleaner = new ChassisCleaner(source);
      // A follower never writes.
      assertEquals(await cleaner.pass(), []);
      assert((await listChassis(sb)).includes("gone"));

      state.leader = true;
      assertEquals(await cleaner.pass(), ["gone"]);
      const left = await listChassis(sb);
      assertEquals(left.sort(), ["down", "foreign", live].sort());
      assertEquals(
        (await sb(["--bare", "--columns=ip", "find", "Encap", "ip=127.0.0.12"])).trim(),
        "",
        "the removed chassis's encap is gone too",
      );
      // Idempotent: nothing more to do.
      assertEquals(await cleaner.pass(), []);

      // Started, it acts on a membership change: the down member is removed.
      cleaner.start();
      try {
        state.members = [live];
        state.removed = ["gone", "down"];
        for (const l of listeners) l("member");
        await eventually(
          "the removed down member's chassis deleted",
          async () => !(await listChassis(sb)).includes("down"),
        );
        assert((await listChassis(sb)).includes(live), "a member keeps its chassis");
        assert((await listChassis(sb)).includes("foreign"), "a foreign chassis stays");
      } finally {
        cleaner.stop();
      }
    } finally {
      await ovn.stop();
    }
  },
});
