/**
 * What every benchmark result records about its run, so a figure in
 * BENCHMARKS.md can be traced to the commit, machine and filesystem it came
 * from (`deno task bench:report` renders the tables from these files).
 */

/** Provenance of one benchmark run, stored as `meta` in `bench/results/*.json`. */
export interface RunMeta {
  /** The benchmark's name, e.g. "raft", "vm". */
  benchmark: string;
  /** The command that produced the file (as typed, with its flags). */
  command: string;
  /** `git rev-parse --short HEAD`, with "-dirty" when the tree had changes. */
  commit: string;
  /** ISO date the run finished. */
  date: string;
  /** Filesystem type of the data dirs (`stat -f -c %T`), e.g. "ext2/ext3", "tmpfs". */
  fsType: string;
  /** How many repetitions each figure is the median of. */
  runs: number;
  cpus: number;
  /** 1-minute load average when the run started (a busy machine skews every figure). */
  loadAvgBefore: number;
  deno: string;
}

async function output(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : "unknown";
  } catch {
    return "unknown";
  }
}

/** The commit being measured; "-dirty" marks uncommitted changes (figures not reproducible). */
export async function currentCommit(): Promise<string> {
  const sha = await output("git", ["rev-parse", "--short", "HEAD"]);
  const status = await output("git", ["status", "--porcelain", "--untracked-files=no"]);
  return status && status !== "unknown" ? `${sha}-dirty` : sha;
}

/** Filesystem type holding `path` (e.g. the benchmark's data dir). */
export function fsTypeOf(path: string): Promise<string> {
  return output("stat", ["-f", "-c", "%T", path]);
}

/** Collects the provenance of a run whose data dirs live under `dataDir`. */
export async function runMeta(
  benchmark: string,
  opts: { dataDir: string; runs: number; command?: string },
): Promise<RunMeta> {
  return {
    benchmark,
    command: opts.command ?? `deno task bench:${benchmark} ${Deno.args.join(" ")}`.trim(),
    commit: await currentCommit(),
    date: new Date().toISOString(),
    fsType: await fsTypeOf(opts.dataDir),
    runs: opts.runs,
    cpus: navigator.hardwareConcurrency,
    loadAvgBefore: Deno.loadavg()[0],
    deno: Deno.version.deno,
  };
}
