/**
 * BENCHMARKS.md's tables are rendered from bench/results/*.json: this fails when they disagree,
 * and checks that the renderer says what the results hold (provenance, medians and spreads, no
 * p99 from small samples).
 */
import { assert, assertEquals, assertThrows } from "../core/testing/assert.ts";
import { firstDifference, formatMarkdown, renderBenchmarks } from "./report.ts";
import {
  MarkerError,
  renderDocument,
  renderFigures,
  renderSection,
  ResultShapeError,
  SECTIONS,
} from "./lib/render.ts";
import { type Figure, figure } from "./lib/figures.ts";
import { type ComparisonResult, medianRatios, summarizeReps, tlsCosts } from "./lib/comparison.ts";
import type { RunMeta } from "./lib/run_meta.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const TIMEOUT_MS = 60_000;

function withTimeout(name: string, fn: () => Promise<void> | void): Deno.TestDefinition {
  return {
    name,
    fn: async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${name}: timed out`)), TIMEOUT_MS);
      });
      try {
        await Promise.race([fn(), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

const META: RunMeta = {
  benchmark: "raft",
  command: "deno task bench:raft --reps 3",
  commit: "abc1234",
  date: "2026-12-01T12:00:00.000Z",
  fsType: "ext2/ext3",
  runs: 3,
  cpus: 2,
  loadAvgBefore: 0.12,
  deno: "2.9.6",
};

function rep(writesPerSec: number, p99Ms: number | null, samples = 1000) {
  return {
    writesPerSec,
    p50Ms: 2,
    p99Ms,
    maxMs: 9,
    samples,
    errors: 0,
    errorSamples: [],
  };
}

/** A raft result: novactl at 380/392/401 writes/s, etcd at 900/927/950; small samples at 64. */
function raftResult(): ComparisonResult {
  const rows = [
    summarizeReps("config write", 1, "novactl", [rep(392, 6.5), rep(380, 6.9), rep(401, 6.1)]),
    summarizeReps("config write", 1, "etcd", [rep(927, 1.8), rep(900, 1.9), rep(950, 1.7)]),
    summarizeReps("config write", 64, "novactl", [rep(50, null, 40), rep(52, null, 41)]),
    summarizeReps("config write", 64, "etcd", [rep(100, null, 80), rep(104, null, 82)]),
  ];
  return {
    meta: META,
    versions: { novactl: "abc1234", etcd: "3.4.23" },
    config: {},
    rows,
    ratios: medianRatios(rows, "etcd"),
  };
}

const DOC = `# Benchmarks

Prose before, kept as written.

<!-- bench:raft:begin -->
stale table
<!-- bench:raft:end -->

Between.

${
  SECTIONS.filter((s) => s.name !== "raft").map((s) =>
    `<!-- bench:${s.name}:begin -->\n<!-- bench:${s.name}:end -->`
  ).join("\n\n")
}

Prose after.
`;

Deno.test(withTimeout("BENCHMARKS.md agrees with bench/results/*.json", async () => {
  const { current, rendered } = await renderBenchmarks();
  const diff = firstDifference(current, rendered);
  assertEquals(
    diff,
    undefined,
    `BENCHMARKS.md disagrees with bench/results/*.json at ${diff}\n` +
      "run `deno task bench:report` and commit the result",
  );
}));

Deno.test(withTimeout("a figure changed in the JSON makes the check fail", async () => {
  const result = raftResult();
  const results = new Map<string, unknown>([["raft", result]]);
  const document = await formatMarkdown(renderDocument(DOC, results));
  assertEquals(
    firstDifference(document, await formatMarkdown(renderDocument(document, results))),
    undefined,
  );

  const changed = raftResult();
  changed.rows[0].writesPerSec.median = 393;
  const rerendered = await formatMarkdown(renderDocument(document, new Map([["raft", changed]])));
  const diff = firstDifference(document, rerendered);
  assert(diff?.includes("392") && diff.includes("393"), `expected the changed row, got ${diff}`);
}));

testWithTimeout({
  name: "rendering rewrites only the marked blocks and keeps the prose around them",
  timeoutMs: 2 * MINUTE,
}, () => {
  const out = renderDocument(DOC, new Map([["raft", raftResult()]]));
  assert(!out.includes("stale table"));
  for (const prose of ["Prose before, kept as written.", "Between.", "Prose after."]) {
    assert(out.includes(prose), prose);
  }
  assertEquals(renderDocument(out, new Map([["raft", raftResult()]])), out);
});

testWithTimeout({
  name: "the raft table prints provenance, medians with spread and the ratio of medians",
  timeoutMs: 2 * MINUTE,
}, () => {
  const out = renderDocument(DOC, new Map([["raft", raftResult()]]));
  assert(out.includes("Run: commit abc1234, ext2/ext3, 3 runs, 2026-12-01"), out);
  assert(out.includes("392 (380–401)"), "novactl writes/s: median (min–max)");
  assert(out.includes("927 (900–950)"), "etcd writes/s");
  assert(out.includes("0.42×"), "392 / 927, the ratio of the medians");
  assert(out.includes("6.50 (6.10–6.90)"), "p99 of repetitions with ≥ 100 samples");
});

testWithTimeout({
  name: "repetitions with fewer than 100 samples show their max, never a p99",
  timeoutMs: 2 * MINUTE,
}, () => {
  const out = renderDocument(DOC, new Map([["raft", raftResult()]]));
  const row64 = out.split("\n").find((line) => line.startsWith("| 64") && line.includes("novactl"));
  assert(row64?.includes("max 9 (n < 100)"), row64);
  assertEquals(raftResult().rows[2].p99Ms, null);
});

testWithTimeout(
  { name: "a figure carries a p99 only from 100 values up", timeoutMs: 2 * MINUTE },
  () => {
    const twenty = figure(Array.from({ length: 20 }, (_, i) => i + 1));
    assertEquals(twenty, { median: 10.5, min: 1, max: 20, n: 20 });
    const hundred = figure(Array.from({ length: 100 }, (_, i) => i + 1));
    assertEquals(hundred.p99, 99);
    assertThrows(() => figure([]), RangeError);
  },
);

testWithTimeout({
  name: "a missing result or one without provenance shows a note, no figures",
  timeoutMs: 2 * MINUTE,
}, () => {
  const raft = SECTIONS.find((s) => s.name === "raft")!;
  assert(renderSection(raft, undefined).includes("`bench/results/raft.json` is missing"));
  const legacy = renderSection(raft, { results: [{ writesPerSec: 5062 }] });
  assert(legacy.includes("predates run provenance"), legacy);
  assert(!legacy.includes("5062") && !legacy.includes("5,062"), "withheld");
});

testWithTimeout({
  name: "a result with provenance but the wrong shape names its file",
  timeoutMs: 2 * MINUTE,
}, () => {
  const raft = SECTIONS.find((s) => s.name === "raft")!;
  const error = assertThrows(() => renderSection(raft, { meta: META }), ResultShapeError);
  assert(error.message.includes("bench/results/raft.json"), error.message);
});

testWithTimeout({
  name: "markers: every section needs one block, and unknown ones are refused",
  timeoutMs: 2 * MINUTE,
}, () => {
  assertThrows(
    () => renderDocument(DOC.replace("<!-- bench:api:begin -->", ""), new Map()),
    MarkerError,
  );
  assertThrows(
    () => renderDocument(`${DOC}\n<!-- bench:nope:begin -->\n<!-- bench:nope:end -->\n`, new Map()),
    MarkerError,
  );
  assertThrows(
    () => renderDocument(`${DOC}\n<!-- bench:vm:begin -->\n<!-- bench:vm:end -->\n`, new Map()),
    MarkerError,
  );
});

testWithTimeout({
  name: "any result's figures are found and pivoted: one row per owner, one column per figure",
  timeoutMs: 2 * MINUTE,
}, () => {
  const side = (base: number): Record<string, Figure> => ({
    commandToDoneMs: { median: base, min: base - 1, max: base + 1, n: 5 },
    guestPausedMs: { median: base / 10, min: 1, max: 50, n: 5 },
  });
  const out = renderFigures({
    meta: META,
    setup: { runs: 5 },
    modes: {
      sharedDisk: { novactl: side(700), bare: side(400) },
      localDiskNbd: { novactl: side(900), bare: side(600) },
    },
  });
  const lines = out.split("\n");
  assert(lines[0].includes("command to done ms") && lines[0].includes("guest paused ms"), out);
  assert(lines.some((l) => l.includes("| shared disk, novactl ") && l.includes("700 (699–701)")));
  assert(lines.some((l) => l.includes("| shared disk, bare ") && l.includes("40 (1–50)")));
  assert(!out.includes("p99"), "no figure here has 100 values");
  assert(lines.some((l) => /^\| setup: runs +\| +5 \|$/.test(l)), "plain numbers are listed too");
});

testWithTimeout({
  name: "TLS cost: novactl next to novactl-plain, as lost throughput and added p50",
  timeoutMs: 2 * MINUTE,
}, () => {
  const result = raftResult();
  const plain = summarizeReps("config write", 1, "novactl-plain", [
    { ...rep(490, 5.0), p50Ms: 1.5 },
    { ...rep(480, 5.1), p50Ms: 1.5 },
    { ...rep(500, 4.9), p50Ms: 1.5 },
  ]);
  result.rows.push(plain);
  result.tlsCost = tlsCosts(result.rows, "novactl-plain");
  assertEquals(result.tlsCost, [{
    case: "config write",
    clients: 1,
    throughputPct: 20,
    p50Ms: 0.5,
  }]);
  const out = renderDocument(DOC, new Map([["raft", result]]));
  const row1 = out.split("\n").find((line) => line.startsWith("| 1 ") && line.includes("novactl "));
  assert(row1?.includes("-20.0 %, +0.50 ms"), row1);
});
