/**
 * The state machine of alerting, without clocks or I/O: given the time, each enabled rule's
 * current values per subject, and what the replicated state says is firing, which alerts to
 * fire and which to resolve. The leader's loop (alerts.ts) feeds it and proposes what it
 * answers; tests feed it a fake clock and fake values.
 *
 * Per rule and subject:
 * - **inactive**: the condition does not hold (or was never seen).
 * - **pending**: it holds, since `since` (kept here, in memory); once it has held for the whole
 *   `for` window (`now - since >= forMs`) the answer is `fire`. It stays pending until the
 *   replicated state shows the alert firing, so a fire that failed to commit is proposed again.
 * - **firing**: in the replicated state. When the condition stops holding the answer is
 *   `resolve` with the value; when the subject is gone (a deleted or stopped VM, a host that
 *   left, one the selector no longer matches) `resolve` with value null.
 *
 * A value that is unknown (null: the host did not answer, or its sample is stale) changes
 * nothing: neither a pending window nor a firing alert is decided on missing data.
 *
 * A new leader starts with no pending windows (they restart from its first evaluation) and
 * with every firing alert from the replicated state, so it never fires one twice.
 *
 * @module
 */
import type { AlertRecord, AlertRuleRecord } from "../fsm/alerts.ts";
import { holds } from "../fsm/alerts.ts";

/** One subject's current value; null when unknown. */
export interface Observed {
  subject: string;
  value: number | null;
}

/** An enabled rule with every subject it selects now. */
export interface RuleInput {
  rule: AlertRuleRecord;
  observed: Observed[];
}

/** What the evaluator asks the leader to propose. */
export type AlertAction =
  | { kind: "fire"; rule: string; subject: string; value: number; since: number }
  | { kind: "resolve"; rule: string; subject: string; value: number | null };

const keyOf = (rule: string, subject: string) => `${rule}\u0000${subject}`;

/** Pending windows between evaluations; one per leader term (a new leader makes a new one). */
export class AlertEvaluator {
  readonly #pending = new Map<string, number>();

  /** The actions at `now` for `inputs`, given the alerts firing in the replicated state. */
  step(now: number, inputs: RuleInput[], firing: readonly AlertRecord[]): AlertAction[] {
    const open = new Map(firing.map((a) => [keyOf(a.rule, a.subject), a]));
    const actions: AlertAction[] = [];
    const seen = new Set<string>();
    for (const { rule, observed } of inputs) {
      const present = new Set<string>();
      for (const { subject, value } of observed) {
        const key = keyOf(rule.name, subject);
        present.add(subject);
        seen.add(key);
        if (value === null) continue;
        const isOpen = open.has(key);
        if (!holds(rule, value)) {
          this.#pending.delete(key);
          if (isOpen) actions.push({ kind: "resolve", rule: rule.name, subject, value });
          continue;
        }
        if (isOpen) {
          this.#pending.delete(key);
          continue;
        }
        const since = this.#pending.get(key) ?? now;
        this.#pending.set(key, since);
        if (now - since >= rule.forMs) {
          actions.push({ kind: "fire", rule: rule.name, subject, value, since });
        }
      }
      for (const a of firing) {
        if (a.rule === rule.name && !present.has(a.subject)) {
          actions.push({ kind: "resolve", rule: rule.name, subject: a.subject, value: null });
        }
      }
    }
    // Windows of rules and subjects no longer evaluated go: the map stays as big as what is watched.
    for (const key of [...this.#pending.keys()]) if (!seen.has(key)) this.#pending.delete(key);
    return actions;
  }

  /** When the condition of `rule` on `subject` started to hold, if it is pending. */
  pendingSince(rule: string, subject: string): number | null {
    return this.#pending.get(keyOf(rule, subject)) ?? null;
  }

  /** How many windows are pending. */
  get pendingCount(): number {
    return this.#pending.size;
  }
}
