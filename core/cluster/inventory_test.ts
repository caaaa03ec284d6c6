import { assert } from "../testing/assert.ts";
import type { Inventory } from "../fsm/mod.ts";
import { inventoryChanged } from "./inventory.ts";

const GIB = 2 ** 30;
const recorded: Inventory = {
  cpus: 16,
  memoryMiB: 65_536,
  diskGiB: 500,
  diskFreeGiB: 200,
  accel: "kvm",
  arch: "x86_64",
  kernel: "6.1.0",
  hostname: "h1",
  version: "0.1.0",
  pool: { volumes: 3, virtualBytes: 30 * GIB, allocatedBytes: 10 * GIB, freeBytes: 200 * GIB },
};

Deno.test("inventory: only a change worth a replicated write counts", () => {
  assert(inventoryChanged(null, recorded), "nothing recorded yet");
  // The recorded copy went through a schema: its keys may come in another order.
  const reordered = Object.fromEntries(Object.entries(recorded).reverse()) as Inventory;
  assert(!inventoryChanged(reordered, { ...recorded }), "the same inventory");
  for (
    const [field, value] of [
      ["cpus", 32],
      ["memoryMiB", 1],
      ["accel", "tcg"],
      ["version", "0.2.0"],
      ["kernel", "6.2.0"],
    ] as const
  ) {
    assert(inventoryChanged(recorded, { ...recorded, [field]: value }), `${field} changed`);
  }
  // Free space drifts: 1 % of the 500 GiB disk (5 GiB) is the threshold.
  assert(!inventoryChanged(recorded, { ...recorded, diskFreeGiB: 196 }), "4 GiB less free");
  assert(inventoryChanged(recorded, { ...recorded, diskFreeGiB: 195 }), "5 GiB less free");
  const pool = recorded.pool!;
  const withPool = (p: Partial<typeof pool>) => ({ ...recorded, pool: { ...pool, ...p } });
  assert(inventoryChanged(recorded, withPool({ volumes: 4 })), "a volume more");
  assert(inventoryChanged(recorded, withPool({ virtualBytes: pool.virtualBytes + 1 })));
  assert(!inventoryChanged(recorded, withPool({ allocatedBytes: pool.allocatedBytes + GIB })));
  assert(inventoryChanged(recorded, withPool({ allocatedBytes: pool.allocatedBytes + 5 * GIB })));
  assert(inventoryChanged(recorded, withPool({ freeBytes: pool.freeBytes - 6 * GIB })));
  const { pool: _, ...withoutPool } = recorded;
  assert(inventoryChanged(withoutPool, recorded), "a pool appeared");
});
