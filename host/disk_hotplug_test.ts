/** What disk hot-plug changes (./disk_hotplug.ts): by slot and, where known, by volume. */
import { assertEquals } from "../core/testing/assert.ts";
import type { VmDisk } from "../core/fsm/mod.ts";
import { diskChanges } from "./disk_hotplug.ts";
import type { DiskSpec } from "./kvm/mod.ts";

const want = (volume: string, port = 0): VmDisk => ({
  id: `vd${port}`,
  pool: "dir",
  volume,
  sizeBytes: 2 ** 20,
  source: { kind: "attached" },
  port,
});
const have = (volume: string | undefined, port = 0): DiskSpec => ({
  id: `vd${port}`,
  path: `/p/${volume}`,
  format: "qcow2",
  port,
  ...(volume ? { volume } : {}),
});

Deno.test("diskChanges: a volume swapped on the same port is removed and added", () => {
  const old = have("a");
  assertEquals(diskChanges([old], [want("a")], true), { add: [], remove: [] });
  assertEquals(diskChanges([old], [want("b")], true), { add: [want("b")], remove: [old] });
  // A launch spec from before the volume field: matched by slot alone, as before.
  assertEquals(diskChanges([have(undefined)], [want("b")], true), { add: [], remove: [] });
});
