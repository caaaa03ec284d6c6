import { assertEquals } from "../../core/testing/assert.ts";
import {
  guestSideOfTap,
  parseCounter,
  parseHostCpu,
  parseLoadavg,
  parseMeminfo,
  parseProcessCpuSeconds,
  parseVmRssBytes,
} from "./proc.ts";

// A QEMU's /proc/<pid>/stat; the name has a space and a ')' to trip naive splitting.
const QEMU_STAT = "4242 (qemu (x) system) S 1 4242 4242 0 -1 4194560 53125 0 12 0 " +
  "1234 567 0 0 20 0 6 0 8434575 1283457024 33210 18446744073709551615 1 1 0 0 0 0 0 " +
  "4096 16963 0 0 0 17 1 0 0 0 0 0";

Deno.test("proc: a process's CPU seconds are utime + stime, after the name", () => {
  assertEquals(parseProcessCpuSeconds(QEMU_STAT), (1234 + 567) / 100);
  assertEquals(parseProcessCpuSeconds("garbage"), null);
  assertEquals(parseProcessCpuSeconds("1 (x) S 1"), null);
});

Deno.test("proc: VmRSS in bytes", () => {
  const status = "Name:\tqemu-system-x86\nVmPeak:\t 1300000 kB\nVmRSS:\t  132840 kB\nThreads:\t6\n";
  assertEquals(parseVmRssBytes(status), 132840 * 1024);
  assertEquals(parseVmRssBytes("Name:\tkthreadd\n"), null);
});

Deno.test("proc: host CPU total and idle (idle + iowait), guest time not counted twice", () => {
  const stat = "cpu  100 10 50 800 40 0 5 0 30 0\ncpu0 50 5 25 400 20 0 2 0 15 0\nintr 1\n";
  assertEquals(parseHostCpu(stat), { totalSeconds: 1005 / 100, idleSeconds: 840 / 100 });
  assertEquals(parseHostCpu("intr 1\n"), null);
});

Deno.test("proc: meminfo total and available; MemFree without MemAvailable", () => {
  assertEquals(
    parseMeminfo("MemTotal:       2048 kB\nMemFree:         512 kB\nMemAvailable:   1024 kB\n"),
    { totalBytes: 2048 * 1024, availableBytes: 1024 * 1024 },
  );
  assertEquals(
    parseMeminfo("MemTotal:       2048 kB\nMemFree:         512 kB\n"),
    { totalBytes: 2048 * 1024, availableBytes: 512 * 1024 },
  );
  assertEquals(parseMeminfo(""), null);
});

Deno.test("proc: loadavg, counters, and a tap's counters from the guest's side", () => {
  assertEquals(parseLoadavg("0.98 1.95 1.68 2/165 16045\n"), [0.98, 1.95, 1.68]);
  assertEquals(parseLoadavg("x"), null);
  assertEquals(parseCounter("123456\n"), 123456);
  assertEquals(parseCounter("-1\n"), null);
  assertEquals(guestSideOfTap({ rxBytes: 1, txBytes: 2 }), { rxBytes: 2, txBytes: 1 });
});
