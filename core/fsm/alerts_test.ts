/**
 * Alert rules and alerts in the state machine: bad rules refused naming the field, firing and
 * resolving idempotent (a retried proposal changes nothing and makes no event), deleting a rule
 * resolves its alerts, resolved alerts bounded.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import type { Command } from "./commands.ts";
import { ALERT_LIMITS, type AlertChange, type AlertRuleSpec } from "./alerts.ts";
import { ConflictError, ValidationError } from "../errors/mod.ts";
import { apply, fresh, refused } from "../testing/fsm.ts";

const RULE: AlertRuleSpec = {
  name: "hot",
  metric: "vm.cpu",
  comparison: "above",
  threshold: 90,
  forMs: 300_000,
  labels: { tier: "web" },
  webhook: "http://127.0.0.1:9/hook",
  enabled: true,
};

const create = (rule: Partial<AlertRuleSpec> = {}): Command => ({
  op: "alert.rule.create",
  rule: { ...RULE, ...rule },
  by: "admin",
  at: 10,
});

Deno.test("alert rules: bad rules are refused naming the field, nothing stored", async () => {
  const fsm = await fresh();
  const cases: [Partial<AlertRuleSpec>, string][] = [
    [{ metric: "vm.cpuu" }, "metric"],
    [{ threshold: -1 }, "threshold"],
    [{ threshold: NaN }, "threshold"],
    [{ forMs: -5 }, "for"],
    [{ webhook: "ftp://x/y" }, "webhook"],
    [{ webhook: "not a url" }, "webhook"],
    [{ name: "Bad_Name" }, "name"],
    [{ metric: "cluster.vms.failed" }, "labels"],
  ];
  for (const [patch, field] of cases) {
    const err = refused(fsm, create(patch));
    assert(err instanceof ValidationError, `${JSON.stringify(patch)}: ${err}`);
    assertEquals((err as ValidationError).issues[0].field, field);
  }
  assert(
    refused(fsm, create({ metric: "nope" })).message.includes("vm.cpu"),
    "an unknown metric's refusal lists the valid names",
  );
  assertEquals(fsm.alerts.rules(), []);
  apply(fsm, create());
  assert(refused(fsm, create()) instanceof ConflictError);
  assertEquals(fsm.alerts.rules().map((r) => r.name), ["hot"]);
});

Deno.test("alerts: fire and resolve once each, with events; a rule's deletion resolves its alerts", async () => {
  const fsm = await fresh();
  apply(fsm, create());
  const fire: Command = {
    op: "alert.fire",
    rule: "hot",
    subject: "web1",
    value: 95,
    since: 100,
    at: 400,
  };
  const first = apply(fsm, fire) as AlertChange;
  assert(first.changed && first.alert?.state === "firing");
  assertEquals(first.alert.firedAt, 400);
  const again = apply(fsm, { ...fire, at: 500 }) as AlertChange;
  assertEquals(again.changed, false, "a second fire changes nothing");
  assertEquals(fsm.alerts.firing().length, 1);

  const resolve: Command = { op: "alert.resolve", rule: "hot", subject: "web1", value: 3, at: 900 };
  const r = apply(fsm, resolve) as AlertChange;
  assert(r.changed);
  assertEquals(r.alert?.resolvedAt, 900);
  assertEquals(r.alert?.resolvedValue, 3);
  assertEquals((apply(fsm, resolve) as AlertChange).changed, false);
  assertEquals(fsm.alerts.firing(), []);

  const actions = fsm.events.tail({ types: ["alert"] }, 100).map((e) => e.action);
  assertEquals(actions, ["alert.fired", "alert.resolved"]);

  apply(fsm, { ...fire, subject: "web2", at: 1000 });
  apply(fsm, { op: "alert.rule.delete", name: "hot", by: "admin", at: 1100 });
  assertEquals(fsm.alerts.firing(), []);
  assertEquals(fsm.alerts.list().find((a) => a.subject === "web2")?.resolvedAt, 1100);
  const gone = apply(fsm, { ...fire, subject: "web3", at: 1200 }) as AlertChange;
  assertEquals(gone.alert, null, "no rule, nothing fires");
});

Deno.test("alerts: resolved alerts are bounded by count and age", async () => {
  const fsm = await fresh();
  apply(fsm, create({ labels: {} }));
  const n = ALERT_LIMITS.resolved + 5;
  for (let i = 0; i < n; i++) {
    apply(fsm, {
      op: "alert.fire",
      rule: "hot",
      subject: `vm${i}`,
      value: 95,
      since: i,
      at: 1000 + i,
    });
    apply(fsm, { op: "alert.resolve", rule: "hot", subject: `vm${i}`, value: 1, at: 2000 + i });
  }
  const kept = fsm.alerts.list();
  assertEquals(kept.length, ALERT_LIMITS.resolved);
  assertEquals(kept[0].subject, `vm${n - 1}`, "the newest are kept");
  apply(fsm, { op: "alert.fire", rule: "hot", subject: "late", value: 95, since: 0, at: 3000 });
  apply(fsm, {
    op: "alert.resolve",
    rule: "hot",
    subject: "late",
    value: 1,
    at: 3100 + ALERT_LIMITS.resolvedMaxAgeMs,
  });
  assertEquals(fsm.alerts.list().map((a) => a.subject), ["late"], "older than the max age: pruned");
});
