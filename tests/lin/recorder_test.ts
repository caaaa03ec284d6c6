/** Unit tests for HistoryRecorder, with a fake clock so timestamps are exact. */
import { assertEquals } from "../../core/testing/assert.ts";
import { HistoryRecorder } from "./recorder.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

type Input = { type: "write"; value: string };
type Output = { version: number };

/** A clock that advances by one on every reading. */
function tickingClock(): () => number {
  let now = 0;
  return () => ++now;
}

class HttpError extends Error {
  constructor(readonly status: number) {
    super(`HTTP ${status}`);
  }
}

/** 4xx: rejected before doing anything. 5xx, timeouts, resets: outcome unknown. */
const classify = (err: unknown) =>
  err instanceof HttpError && err.status < 500 ? "definite" as const : "indefinite" as const;

const write = (value: string): Input => ({ type: "write", value });

testWithTimeout({
  name: "a successful operation is recorded with its call and return times",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const rec = new HistoryRecorder<Input, Output>(tickingClock());
  const result = await rec.record(3, write("a"), () => Promise.resolve({ version: 7 }), classify);
  assertEquals(result, { status: "ok", output: { version: 7 } });
  assertEquals(rec.history(), [
    { client: 3, input: write("a"), output: { version: 7 }, call: 1, ret: 2 },
  ]);
});

testWithTimeout({
  name: "an indefinite failure is recorded as unknown and never returning",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const rec = new HistoryRecorder<Input, Output>(tickingClock());
  const error = new HttpError(503);
  const result = await rec.record(1, write("b"), () => Promise.reject(error), classify);
  assertEquals(result, { status: "unknown", error });
  assertEquals(rec.history(), [
    { client: 1, input: write("b"), output: { unknown: true }, call: 1, ret: Infinity },
  ]);
});

testWithTimeout(
  { name: "a definite failure is left out of the history", timeoutMs: 2 * MINUTE },
  async () => {
    const rec = new HistoryRecorder<Input, Output>(tickingClock());
    const error = new HttpError(400);
    const result = await rec.record(1, write("c"), () => Promise.reject(error), classify);
    assertEquals(result, { status: "failed", error });
    assertEquals(rec.history(), []);
  },
);

testWithTimeout({
  name: "errors are indefinite unless classified otherwise",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const rec = new HistoryRecorder<Input, Output>(tickingClock());
  await rec.record(2, write("d"), () => Promise.reject(new HttpError(400)));
  assertEquals(rec.history().map((op) => op.ret), [Infinity]);
});

testWithTimeout(
  { name: "concurrent operations keep their own intervals", timeoutMs: 2 * MINUTE },
  async () => {
    const rec = new HistoryRecorder<Input, Output>(tickingClock());
    let release!: () => void;
    const gate = new Promise<void>((resolve) => release = resolve);
    const slow = rec.record(1, write("slow"), async () => {
      await gate;
      return { version: 2 };
    });
    await rec.record(2, write("fast"), () => Promise.resolve({ version: 1 }));
    release();
    await slow;
    const intervals = rec.history().map((op) => [op.input.value, op.call, op.ret]);
    assertEquals(intervals, [["fast", 2, 3], ["slow", 1, 4]]);
  },
);
