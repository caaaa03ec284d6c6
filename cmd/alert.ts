/**
 * `novactl alert ...`: alert rules and alerts, a thin client of /api/v1/alerts
 * (api/routes/alerts.ts).
 *
 * - `alert rule create NAME --metric M (--above N | --below N) [--for 5m] [--label k=v]...
 *   [--webhook URL] [--disabled]`
 * - `alert rule list`, `alert rule show NAME`, `alert rule delete NAME`,
 *   `alert rule enable|disable NAME`
 * - `alert list [--all] [--rule NAME]`: firing alerts (with `--all`, resolved ones too)
 * - `alert metrics`: the metrics a rule may name
 */
import { Command } from "commander";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printFields, printTable, render } from "./output.ts";
import { collectLabel } from "./vm.ts";
import type { AlertRuleView, AlertView } from "../api/routes/alerts.ts";

const rulePath = (name: string) => `/api/v1/alerts/rules/${encodeURIComponent(name)}`;

/** A threshold as given; anything not a number is sent as is, for the server to name. */
function threshold(text: string): number | string {
  const n = Number(text);
  return text.trim() !== "" && Number.isFinite(n) ? n : text;
}

function condition(r: Pick<AlertRuleView, "metric" | "comparison" | "threshold">): string {
  return `${r.metric} ${r.comparison === "above" ? ">" : "<"} ${r.threshold}`;
}

function ruleRow(r: AlertRuleView): Record<string, unknown> {
  const labels = Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(",");
  return {
    name: r.name,
    condition: condition(r),
    for: `${r.forSeconds}s`,
    labels: labels || "-",
    webhook: r.webhook ?? "-",
    enabled: r.enabled,
  };
}

function alertRow(a: AlertView): Record<string, unknown> {
  return {
    rule: a.rule,
    subject: a.subject,
    state: a.state,
    condition: condition(a),
    value: a.state === "firing" ? a.value : a.resolvedValue,
    firedAt: a.firedAt,
    resolvedAt: a.resolvedAt ?? "-",
  };
}

/** `novactl alert`. */
export function alertCommand(): Command {
  const alert = new Command("alert").description("alert rules on VM, host and cluster metrics");
  const rule = alert.command("rule").description("alert rules (evaluated by the leader)");
  withClientOptions(
    rule.command("create").argument("<name>").description("create an alert rule")
      .requiredOption("--metric <metric>", "e.g. vm.cpu, host.disk, cluster.vms.failed")
      .option("--above <n>", "fire while the value is above n", threshold)
      .option("--below <n>", "fire while the value is below n", threshold)
      .option("--for <duration>", "how long it must hold before firing, e.g. 90s, 5m", "0s")
      .option(
        "--label <key=value>",
        "only VMs (vm.*) or hosts (host.*) with this label (repeatable)",
        collectLabel,
        {},
      )
      .option("--webhook <url>", "POST firing and resolved alerts here (http or https)")
      .option("--disabled", "create it disabled"),
  ).action(
    async (
      name: string,
      opts: GlobalOpts & {
        metric: string;
        above?: number;
        below?: number;
        for: string;
        label: Record<string, string>;
        webhook?: string;
        disabled?: boolean;
      },
    ) => {
      const r = await clientOf(opts).request<AlertRuleView>("POST", "/api/v1/alerts/rules", {
        name,
        metric: opts.metric,
        ...(opts.above === undefined ? {} : { above: opts.above }),
        ...(opts.below === undefined ? {} : { below: opts.below }),
        for: opts.for,
        labels: opts.label,
        ...(opts.webhook === undefined ? {} : { webhook: opts.webhook }),
        enabled: !opts.disabled,
      });
      render(opts.output, r, () => printFields(ruleRow(r)));
    },
  );
  withClientOptions(withListLimit(rule.command("list").description("list alert rules")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list<"rules", AlertRuleView>(
        "/api/v1/alerts/rules",
        "rules",
        opts.limit,
      );
      render(
        opts.output,
        r,
        () =>
          printTable(r.rules.map(ruleRow), [
            "name",
            "condition",
            "for",
            "labels",
            "webhook",
            "enabled",
          ]),
      );
    });
  withClientOptions(rule.command("show").argument("<name>").description("show an alert rule"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<AlertRuleView & { firing: AlertView[] }>(rulePath(name));
      render(opts.output, r, () => {
        printFields({ ...ruleRow(r), createdAt: r.createdAt, by: r.by, firing: r.firing.length });
        if (r.firing.length) {
          console.log();
          printTable(r.firing.map(alertRow), ["subject", "value", "firedAt"]);
        }
      });
    });
  for (const [verb, enabled] of [["enable", true], ["disable", false]] as const) {
    withClientOptions(
      rule.command(verb).argument("<name>").description(
        `${verb} an alert rule${enabled ? "" : " (resolves what it raised)"}`,
      ),
    ).action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).request<AlertRuleView>("PATCH", rulePath(name), { enabled });
      render(opts.output, r, () => printFields(ruleRow(r)));
    });
  }
  withClientOptions(
    rule.command("delete").argument("<name>").description(
      "delete an alert rule (resolves what it raised)",
    ),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request<{ name: string; resolved: number }>(
      "DELETE",
      rulePath(name),
    );
    render(opts.output, r, () => console.log(`deleted alert rule ${name}`));
  });

  withClientOptions(withListLimit(
    alert.command("list").description("firing alerts (--all: resolved ones too), newest first")
      .option("--all", "resolved alerts too")
      .option("--rule <name>", "only this rule's"),
  )).action(async (opts: ListOpts & { all?: boolean; rule?: string }) => {
    const q = new URLSearchParams();
    if (opts.all) q.set("all", "true");
    if (opts.rule) q.set("rule", opts.rule);
    const r = await clientOf(opts).list<"alerts", AlertView>(
      `/api/v1/alerts?${q}`,
      "alerts",
      opts.limit,
    );
    render(
      opts.output,
      r,
      () =>
        printTable(r.alerts.map(alertRow), [
          "rule",
          "subject",
          "state",
          "condition",
          "value",
          "firedAt",
          "resolvedAt",
        ]),
    );
  });
  withClientOptions(alert.command("metrics").description("the metrics a rule may name"))
    .action(async (opts: GlobalOpts) => {
      const r = await clientOf(opts).get<{ metrics: { name: string; description: string }[] }>(
        "/api/v1/alerts/metrics",
      );
      render(opts.output, r, () => printTable(r.metrics, ["name", "description"]));
    });
  return alert;
}
