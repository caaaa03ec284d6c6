import { explain, place } from "./placement.ts";
import { assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { host, vm } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

testWithTimeout(
  { name: "spread picks the host with most free memory", timeoutMs: 2 * MINUTE },
  () => {
    const r = place({ cpus: 1, memoryMiB: 256 }, [host("n1", 1024), host("n2", 2048)], [
      vm("a", "n2", 1536),
    ], DEFAULT_CONFIG);
    assertEquals(r.ok && { node: r.node, freeMemoryMiB: r.freeMemoryMiB }, {
      node: "n1",
      freeMemoryMiB: 1024,
    });
  },
);

testWithTimeout({ name: "an unplaceable VM gets a reason per host", timeoutMs: 2 * MINUTE }, () => {
  const r = place(
    { cpus: 1, memoryMiB: 512 },
    [host("n1", 1024), host("n2", 4096, { state: "cordoned" })],
    [vm("a", "n1", 824)],
    DEFAULT_CONFIG,
  );
  assertEquals(r.ok, false);
  if (!r.ok) {
    assertEquals(explain(r.reasons), "n1: memory 200 MiB free < 512 MiB requested; n2: cordoned");
  }
});

testWithTimeout(
  { name: "an explicit node is honoured or explained", timeoutMs: 2 * MINUTE },
  () => {
    const placed = place(
      { cpus: 1, memoryMiB: 64, node: "n2" },
      [host("n1", 4096), host("n2", 128)],
      [],
      DEFAULT_CONFIG,
    );
    assertEquals(placed.ok && { node: placed.node, freeMemoryMiB: placed.freeMemoryMiB }, {
      node: "n2",
      freeMemoryMiB: 128,
    });
    const r = place({ cpus: 1, memoryMiB: 64, node: "n9" }, [host("n1", 4096)], [], DEFAULT_CONFIG);
    assertEquals(r, { ok: false, reasons: { n9: "no such node" } });
  },
);

testWithTimeout({ name: "cpu overcommit ratio is applied", timeoutMs: 2 * MINUTE }, () => {
  const r = place({ cpus: 9, memoryMiB: 64 }, [host("n1", 4096)], [], DEFAULT_CONFIG);
  assertEquals(r.ok, false, "2 cpus x 4 overcommit = 8 < 9");
  const ok = place({ cpus: 8, memoryMiB: 64 }, [host("n1", 4096)], [], DEFAULT_CONFIG);
  assertEquals(ok.ok, true);
});

testWithTimeout({
  name: "with no candidate host the explanation says why, never nothing",
  timeoutMs: 2 * MINUTE,
}, () => {
  const none = place({ name: "v1", cpus: 1, memoryMiB: 256 }, [], [], DEFAULT_CONFIG);
  assertEquals(none.ok, false);
  if (none.ok) return;
  assertEquals(explain(none.reasons), "no hosts registered yet");
  assertEquals(
    explain(none.reasons, ["n1"]),
    "no hosts registered yet; n1 has not registered as a host yet (it does once its accelerator probe decides)",
  );
});

testWithTimeout({
  name: "a host whose accelerator probe has not decided takes no VMs, and says so",
  timeoutMs: 2 * MINUTE,
}, () => {
  const r = place(
    { cpus: 1, memoryMiB: 256 },
    [host("n1", 4096, { accel: null }), host("n2", 128)],
    [],
    DEFAULT_CONFIG,
  );
  assertEquals(r.ok, false);
  if (!r.ok) {
    assertEquals(
      explain(r.reasons),
      "n1: probing its accelerator; n2: memory 128 MiB free < 256 MiB requested",
    );
  }
  const later = place({ cpus: 1, memoryMiB: 256 }, [host("n1", 4096)], [], DEFAULT_CONFIG);
  assertEquals(later.ok && later.node, "n1");
});

testWithTimeout(
  {
    name: "a disk's pool pins its VM to the pool's host and needs room there",
    timeoutMs: 2 * MINUTE,
  },
  () => {
    const GiB = 2 ** 30;
    const hosts = [host("n1", 4096), host("n2", 1024), host("n3", 4096)];
    const pinned = place(
      { cpus: 1, memoryMiB: 256, pools: [{ pool: "fast", node: "n2", bytes: GiB, room: null }] },
      hosts,
      [],
      DEFAULT_CONFIG,
    );
    assertEquals(pinned.ok && pinned.node, "n2", "not the emptier n1: the pool is on n2");
    const room = { n1: 8 * GiB, n2: 'pool "local" on n2: not mounted', n3: 2 * GiB };
    const full = place(
      { cpus: 1, memoryMiB: 256, pools: [{ pool: "local", node: null, bytes: 4 * GiB, room }] },
      hosts,
      [],
      DEFAULT_CONFIG,
    );
    assertEquals(full.ok && full.node, "n1");
    const none = place(
      {
        cpus: 1,
        memoryMiB: 256,
        node: "n3",
        pools: [{ pool: "local", node: null, bytes: 4 * GiB, room }],
      },
      hosts,
      [],
      DEFAULT_CONFIG,
    );
    assertEquals(none.ok, false);
    if (!none.ok) {
      assertEquals(explain(none.reasons), 'n3: pool "local" has 2.0 GiB free < 4.0 GiB requested');
    }
    const elsewhere = place(
      {
        cpus: 1,
        memoryMiB: 256,
        pools: [{ pool: "fast", node: "n2", bytes: GiB, room: { n2: 'pool "fast" on n2: x' } }],
      },
      hosts,
      [],
      DEFAULT_CONFIG,
    );
    assertEquals(
      !elsewhere.ok && explain(elsewhere.reasons),
      [
        'n1: pool "fast" is on n2',
        'n2: pool "fast" on n2: x',
        'n3: pool "fast" is on n2',
      ].join("; "),
    );
  },
);
