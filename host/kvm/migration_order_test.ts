/**
 * The QMP commands migrateMemory sends, in order, against a scripted QMP (no QEMU): with
 * `stopFirst` the guest is paused before `migrate`, so no page it writes can be missed by
 * dirty tracking (see stopAndCopy).
 */
import { assertEquals } from "../../core/testing/assert.ts";
import { migrateMemory, resumeIncoming, stopAndCopy } from "./migration.ts";
import type { QmpEvent, WaitForEventOptions } from "./qmp.ts";
import type { QemuVm } from "./qemu.ts";

/** A source QEMU whose migration completes as soon as `migrate` is sent. */
function scriptedSource(): { vm: QemuVm; sent: string[] } {
  const sent: string[] = [];
  const waiters: { name: string; opts: WaitForEventOptions; resolve: (e: QmpEvent) => void }[] = [];
  const emit = (event: string, data: Record<string, unknown>) => {
    const e: QmpEvent = { event, data, timestamp: { seconds: 1, microseconds: 0 } };
    for (const w of waiters.splice(0)) {
      if (w.name === event && (!w.opts.match || w.opts.match(e))) w.resolve(e);
      else waiters.push(w);
    }
  };
  let migrated = false;
  const qmp = {
    execute(command: string): Promise<unknown> {
      sent.push(command);
      if (command === "migrate") {
        migrated = true;
        queueMicrotask(() => emit("MIGRATION", { status: "completed" }));
      }
      if (command === "query-migrate") {
        return Promise.resolve(
          migrated
            ? {
              status: "completed",
              "total-time": 10,
              downtime: 5,
              ram: { transferred: 1, total: 1, remaining: 0 },
            }
            : { status: "setup" },
        );
      }
      return Promise.resolve({});
    },
    waitForEvent(name: string, opts: WaitForEventOptions): Promise<QmpEvent> {
      return new Promise((resolve) => waiters.push({ name, opts, resolve }));
    },
  };
  return { vm: { qmp } as unknown as QemuVm, sent };
}

const never = new AbortController().signal;
const dest = { host: "127.0.0.1", port: 4444 };

Deno.test("migrateMemory: stopFirst pauses the guest before migrate", async () => {
  const { vm, sent } = scriptedSource();
  await migrateMemory(
    vm,
    dest,
    "creds",
    {
      downtimeLimitMs: 50,
      timeoutMs: 10_000,
      stopFirst: true,
    },
    () => {},
    never,
  );
  const memoryPhase = sent.filter((c) => c === "stop" || c === "migrate" || c === "cont");
  assertEquals(memoryPhase, ["stop", "migrate"]);
});

Deno.test("migrateMemory: live by default (the guest runs until QEMU stops it)", async () => {
  const { vm, sent } = scriptedSource();
  await migrateMemory(
    vm,
    dest,
    "creds",
    { downtimeLimitMs: 50, timeoutMs: 10_000 },
    () => {},
    never,
  );
  assertEquals(sent.includes("stop"), false);
  assertEquals(sent.includes("migrate"), true);
});

Deno.test("stopAndCopy: auto pauses only TCG guests on QEMU without the 9.0 dirty-tracking fix", () => {
  assertEquals(stopAndCopy("auto", "tcg", { major: 7 }), true);
  assertEquals(stopAndCopy("auto", "tcg", { major: 8 }), true);
  assertEquals(stopAndCopy("auto", "tcg", { major: 9 }), false);
  assertEquals(stopAndCopy("auto", "tcg", { major: 10 }), false);
  assertEquals(stopAndCopy("auto", "kvm", { major: 7 }), false);
  assertEquals(stopAndCopy("always", "kvm", { major: 10 }), true);
  assertEquals(stopAndCopy("never", "tcg", { major: 7 }), false);
});

Deno.test("resumeIncoming: cont only once the destination has loaded the whole stream", async () => {
  const sent: string[] = [];
  let loading = 3;
  let onResume: ((e: QmpEvent) => void) | null = null;
  let onStuck: ((err: Error) => void) | null = null;
  const qmp = {
    execute(command: string): Promise<unknown> {
      sent.push(command);
      if (command === "query-status") {
        return Promise.resolve({ status: loading-- > 0 ? "inmigrate" : "paused" });
      }
      if (command === "cont") {
        // A stop-and-copy's destination stays paused after a cont sent while it loads.
        if (loading >= 0) {
          queueMicrotask(() => onStuck?.(new Error("cont while loading: the guest stays paused")));
          return Promise.resolve({});
        }
        queueMicrotask(() =>
          onResume?.({ event: "RESUME", timestamp: { seconds: 2, microseconds: 0 } })
        );
      }
      return Promise.resolve({});
    },
    waitForEvent(_name: string, _opts: WaitForEventOptions): Promise<QmpEvent> {
      return new Promise((resolve, reject) => {
        onResume = resolve;
        onStuck = reject;
      });
    },
  };
  const ev = await resumeIncoming({ qmp, pid: 1 } as unknown as QemuVm, 10_000);
  assertEquals(ev.event, "RESUME");
  assertEquals(sent.slice(-2), ["query-status", "cont"]);
  assertEquals(sent.filter((c) => c === "cont").length, 1);
});
