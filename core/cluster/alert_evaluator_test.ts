/**
 * The alert evaluator with a fake clock and fake values: pending for the whole `for` window
 * before firing, a dip resets the window, resolves when the condition stops or the subject
 * goes, unknown values decide nothing, a firing alert is never fired again.
 */
import { assertEquals } from "../testing/assert.ts";
import type { AlertRecord, AlertRuleRecord } from "../fsm/alerts.ts";
import { type AlertAction, AlertEvaluator, type Observed } from "./alert_evaluator.ts";

const RULE: AlertRuleRecord = {
  name: "hot",
  metric: "vm.cpu",
  comparison: "above",
  threshold: 90,
  forMs: 300_000,
  labels: {},
  webhook: null,
  enabled: true,
  createdAt: 0,
  updatedAt: 0,
  by: "t",
};

function firingOf(a: Extract<AlertAction, { kind: "fire" }>, at: number): AlertRecord {
  return {
    id: 1,
    rule: a.rule,
    metric: "vm.cpu",
    subject: a.subject,
    state: "firing",
    comparison: "above",
    threshold: 90,
    value: a.value,
    since: a.since,
    firedAt: at,
    resolvedAt: null,
    resolvedValue: null,
  };
}

const obs = (value: number | null, subject = "web1"): Observed[] => [{ subject, value }];

Deno.test("alert evaluator: pending for the whole window, then fires once, then resolves", () => {
  const ev = new AlertEvaluator();
  const rule = (
    value: number | null,
    subject = "web1",
  ) => [{ rule: RULE, observed: obs(value, subject) }];
  assertEquals(ev.step(0, rule(95), []), [], "pending, not firing");
  assertEquals(ev.pendingSince("hot", "web1"), 0);
  assertEquals(ev.step(299_999, rule(95), []), [], "one ms short of the window");
  const fired = ev.step(300_000, rule(97), []);
  assertEquals(fired, [{ kind: "fire", rule: "hot", subject: "web1", value: 97, since: 0 }]);
  // Not yet committed: proposed again, with the same start.
  assertEquals(ev.step(310_000, rule(97), []), [{ ...fired[0], value: 97 }]);
  const open = [firingOf(fired[0] as Extract<AlertAction, { kind: "fire" }>, 300_000)];
  assertEquals(ev.step(320_000, rule(99), open), [], "firing: not fired again");
  assertEquals(ev.pendingCount, 0);
  assertEquals(ev.step(330_000, rule(null), open), [], "unknown value: nothing decided");
  assertEquals(ev.step(340_000, rule(50), open), [
    { kind: "resolve", rule: "hot", subject: "web1", value: 50 },
  ]);
});

Deno.test("alert evaluator: a dip below the threshold restarts the window", () => {
  const ev = new AlertEvaluator();
  const rule = (value: number) => [{ rule: RULE, observed: obs(value) }];
  ev.step(0, rule(95), []);
  ev.step(200_000, rule(10), []);
  assertEquals(ev.pendingSince("hot", "web1"), null);
  ev.step(250_000, rule(95), []);
  assertEquals(ev.step(500_000, rule(95), []), [], "only 250 s since the dip");
  assertEquals(ev.step(550_000, rule(95), []).length, 1);
});

Deno.test("alert evaluator: below, for 0, a gone subject resolves, unknown keeps the window", () => {
  const ev = new AlertEvaluator();
  const low = { ...RULE, name: "idle", comparison: "below" as const, threshold: 1, forMs: 0 };
  const fired = ev.step(5, [{ rule: low, observed: obs(0.5) }], []);
  assertEquals(fired, [{ kind: "fire", rule: "idle", subject: "web1", value: 0.5, since: 5 }]);
  const open = [firingOf(fired[0] as Extract<AlertAction, { kind: "fire" }>, 5)];
  assertEquals(ev.step(10, [{ rule: low, observed: [] }], open), [
    { kind: "resolve", rule: "idle", subject: "web1", value: null },
  ]);

  ev.step(0, [{ rule: RULE, observed: obs(95, "web2") }], []);
  ev.step(100_000, [{ rule: RULE, observed: obs(null, "web2") }], []);
  assertEquals(ev.pendingSince("hot", "web2"), 0, "an unknown value keeps the window");
  ev.step(200_000, [{ rule: RULE, observed: [] }], []);
  assertEquals(ev.pendingCount, 0, "windows of subjects no longer watched go");
});
