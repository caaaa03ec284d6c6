/**
 * `deno task bench:report`: rewrites the tables of BENCHMARKS.md from the raw
 * results in `bench/results/*.json` (see bench/lib/render.ts for the markers).
 *
 *   deno run -A bench/report.ts            rewrite BENCHMARKS.md in place
 *   deno run -A bench/report.ts --check    exit 1 if BENCHMARKS.md is out of date
 */

import { renderDocument, SECTIONS } from "./lib/render.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Parsed `bench/results/NAME.json` of every section; undefined where the file is missing. */
export async function loadResults(root = ROOT): Promise<Map<string, unknown>> {
  const results = new Map<string, unknown>();
  for (const { name } of SECTIONS) {
    const path = `${root}/bench/results/${name}.json`;
    try {
      results.set(name, JSON.parse(await Deno.readTextFile(path)));
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        throw new Error(`${path}: ${error instanceof Error ? error.message : error}`);
      }
    }
  }
  return results;
}

/**
 * Formats markdown exactly as `deno fmt` (with this repository's deno.json) would, so the
 * rendered file passes `deno fmt --check` and compares equal to a formatted BENCHMARKS.md.
 */
export async function formatMarkdown(markdown: string, root = ROOT): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--ext", "md", "-"],
    cwd: root,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(markdown));
  await writer.close();
  const out = await child.output();
  if (!out.success) {
    throw new Error(
      `deno fmt failed on the rendered markdown: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

/** BENCHMARKS.md as it is, and as the committed results render it (formatted as deno fmt). */
export async function renderBenchmarks(
  root = ROOT,
): Promise<{ path: string; current: string; rendered: string }> {
  const path = `${root}/BENCHMARKS.md`;
  const current = await Deno.readTextFile(path);
  const rendered = await formatMarkdown(renderDocument(current, await loadResults(root)), root);
  return { path, current, rendered };
}

/** The first line that differs, for a useful failure message. */
export function firstDifference(a: string, b: string): string | undefined {
  const left = a.split("\n");
  const right = b.split("\n");
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    if (left[i] !== right[i]) {
      return `line ${i + 1}:\n  BENCHMARKS.md: ${left[i] ?? "(end)"}\n  rendered:      ${
        right[i] ?? "(end)"
      }`;
    }
  }
  return undefined;
}

if (import.meta.main) {
  const { path, current, rendered } = await renderBenchmarks();
  if (Deno.args.includes("--check")) {
    const diff = firstDifference(current, rendered);
    if (diff) {
      console.error(`BENCHMARKS.md disagrees with bench/results/*.json at ${diff}`);
      console.error("run `deno task bench:report` to regenerate it");
      Deno.exit(1);
    }
    console.log("BENCHMARKS.md matches bench/results/*.json");
  } else if (rendered === current) {
    console.log("BENCHMARKS.md already matches bench/results/*.json");
  } else {
    await Deno.writeTextFile(path, rendered);
    console.log(`rewrote the tables of ${path} from bench/results/*.json`);
  }
}
