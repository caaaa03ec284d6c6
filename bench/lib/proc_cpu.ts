/** CPU time of processes and threads from /proc (Linux), for benchmarks that split a cost by process. */

/** Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;

async function statSeconds(path: string): Promise<number> {
  const stat = await Deno.readTextFile(path);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND; // utime + stime
}

/** CPU seconds (user + system) that process `pid` used so far, every thread counted. */
export function cpuSeconds(pid: number): Promise<number> {
  return statSeconds(`/proc/${pid}/stat`);
}

/** CPU seconds of `pid`'s first thread only: a Deno process's JavaScript thread. */
export function mainThreadCpuSeconds(pid: number): Promise<number> {
  return statSeconds(`/proc/${pid}/task/${pid}/stat`);
}

/** The machine's CPU time so far, in seconds summed over its cores: busy and in all. */
export async function machineCpuSeconds(): Promise<{ busy: number; total: number }> {
  const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0]; // "cpu  user nice system idle iowait …"
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  const idle = ticks[3] + ticks[4];
  return { busy: (total - idle) / TICKS_PER_SECOND, total: total / TICKS_PER_SECOND };
}
