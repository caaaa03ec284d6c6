import { assert, assertEquals, assertRejects, assertThrows } from "../../core/testing/assert.ts";
import {
  modifiedAtMs,
  pairDiffs,
  spansOf,
  spanValues,
  startedAt,
  vcpuStart,
  vcpuTimeNs,
} from "./start_marks.ts";

const m = (start: number, qemuUp: number, running: number, discover: number, ack: number) => ({
  start,
  qemuUp,
  running,
  discover,
  ack,
});

Deno.test("spansOf: the spans between consecutive marks add up to start → ack", () => {
  const s = spansOf(m(1000, 1150, 1400, 3900, 3925));
  assertEquals(s, { control: 150, launch: 250, boot: 2500, dhcp: 25 });
  assertEquals(Object.values(s).reduce((a, b) => a + b), 2925);
});

Deno.test("spansOf: a mark before the one it follows is refused, naming both", () => {
  const err = assertThrows(() => spansOf(m(1000, 1150, 1100, 3900, 3925)), RangeError);
  assert(err.message.includes("running (1100) before qemuUp (1150)"), err.message);
  const ack = assertThrows(() => spansOf(m(1000, 1150, 1400, 3900, 3899)), RangeError);
  assert(ack.message.includes("ack (3899) before discover"), ack.message);
  const nan = assertThrows(() => spansOf(m(1000, NaN, 1400, 3900, 3925)), RangeError);
  assert(nan.message.includes("qemuUp (NaN)"), nan.message);
});

Deno.test("pairDiffs: per pair, the first side's span minus the second's", () => {
  const a = [m(0, 200, 500, 3000, 3030), m(0, 180, 480, 3500, 3520)];
  const b = [m(0, 100, 350, 3300, 3320), m(0, 90, 380, 2900, 2930)];
  const d = pairDiffs(a, b);
  assertEquals(d.control, [100, 90]);
  assertEquals(d.launch, [50, 10]);
  assertEquals(d.boot, [-450, 500]);
  assertEquals(d.dhcp, [10, -10]);
  assertEquals(d.total, [-290, 590]);
  assertEquals(spanValues(a).total, [3030, 3520]);
  const short = assertThrows(() => pairDiffs(a, b.slice(1)), RangeError);
  assertEquals(short.message, "2 starts against 1");
});

/** A fake /proc with QEMU `pid`'s threads: main, its vCPU (`CPU 0/TCG`) and a worker. */
async function fakeProc(dir: string, pid: number, vcpuNs: number, otherNs = 50_000_000) {
  const threads = [[pid, "qemu-system-x86", otherNs], [pid + 1, "CPU 0/TCG", vcpuNs], [
    pid + 2,
    "worker",
    otherNs,
  ]] as const;
  for (const [tid, comm, ns] of threads) {
    const t = `${dir}/${pid}/task/${tid}`;
    await Deno.mkdir(t, { recursive: true });
    await Deno.writeTextFile(`${t}/comm`, `${comm}\n`);
    await Deno.writeTextFile(`${t}/schedstat`, `${ns} 81329 36\n`);
  }
}

Deno.test("vcpuTimeNs: only the virtual CPU threads' CPU time counts", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await fakeProc(dir, 100, 7_000_000);
    assertEquals(await vcpuTimeNs(100, dir), 7_000_000);
    await fakeProc(dir, 200, 0);
    assertEquals(await vcpuTimeNs(200, dir), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("vcpuStart: waits for the pidfile and a running vCPU, back-dated by its CPU time", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const pidfile = `${dir}/qemu.pid`;
    const watch = vcpuStart(pidfile, { everyMs: 2, proc: dir });
    await new Promise((r) => setTimeout(r, 20));
    await Deno.writeTextFile(pidfile, "300\n");
    const idle = performance.timeOrigin + performance.now();
    await fakeProc(dir, 300, 0); // started paused: busy main thread, idle vCPU
    await new Promise((r) => setTimeout(r, 30));
    await fakeProc(dir, 300, 3_000_000); // 3 ms of guest CPU
    const at = await watch.at;
    assert(at >= idle, `${at} < ${idle}`);
    assert(at <= performance.timeOrigin + performance.now());

    // A vCPU seen with 10 s of CPU at the first poll after an idle one started after that poll.
    await Deno.writeTextFile(`${dir}/late.pid`, "400\n");
    await fakeProc(dir, 400, 0);
    const late = vcpuStart(`${dir}/late.pid`, { everyMs: 2, proc: dir });
    await new Promise((r) => setTimeout(r, 20));
    const idleSeen = performance.timeOrigin + performance.now();
    await fakeProc(dir, 400, 10_000_000_000);
    assert((await late.at) >= idleSeen - 15, "back-dated before the vCPU was seen idle");

    const never = vcpuStart(`${dir}/none.pid`, { everyMs: 2, proc: dir });
    never.stop();
    const stopped = await assertRejects(() => never.at);
    assert(stopped.message.includes("stopped"), stopped.message);
    const none = await assertRejects(
      () => vcpuStart(`${dir}/none.pid`, { everyMs: 2, timeoutMs: 10, proc: dir }).at,
    );
    assert(none.message.includes("no virtual CPU ran"), none.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("startedAt: back-dated by the vCPUs' CPU time, not before the idle poll", () => {
  assertEquals(startedAt(1_000, 1_100, 30_000_000), 1_070);
  assertEquals(startedAt(1_000, 1_100, 500_000_000), 1_000);
});

Deno.test("modifiedAtMs: a file's modification time, epoch ms", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const before = performance.timeOrigin + performance.now();
    await Deno.writeTextFile(`${dir}/qmp.sock`, "");
    assert(Math.abs((await modifiedAtMs(`${dir}/qmp.sock`)) - before) < 1_000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
