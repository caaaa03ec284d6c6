import { assert } from "../../core/testing/assert.ts";
import { cpuSeconds, machineCpuSeconds, mainThreadCpuSeconds } from "./proc_cpu.ts";

Deno.test("proc_cpu: a deno process spinning its JavaScript thread shows in its, its thread's and the machine's CPU time", async () => {
  const machine0 = await machineCpuSeconds();
  // As a node runs: `deno run`'s JavaScript on the process's first thread. It spins 400 ms, then idles.
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      "const end = performance.now() + 400; while (performance.now() < end) {} " +
      "await new Promise((r) => setTimeout(r, 5000));",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await new Promise((r) => setTimeout(r, 1_000));
    const all = await cpuSeconds(child.pid);
    const main = await mainThreadCpuSeconds(child.pid);
    const machine1 = await machineCpuSeconds();
    // Clock ticks are 10 ms; 400 ms of spinning is at least ~0.3 s however it is sliced.
    assert(main >= 0.3, `the JavaScript thread used ${main} s`);
    assert(all >= main, `the process (${all} s) counts at least its first thread (${main} s)`);
    const busy = machine1.busy - machine0.busy;
    assert(busy >= 0.3, `the machine was busy ${busy} s`);
    assert(machine1.total - machine0.total >= busy, "busy is part of the total");
  } finally {
    child.kill();
    await child.status;
  }
});
