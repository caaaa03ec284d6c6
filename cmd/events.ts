/**
 * `novactl events`: the cluster's event stream (GET /api/v1/events).
 *
 * Without `--follow`, the newest events (`--tail`, 100) or those after `--since ID`,
 * then exit; `-o json` prints one document `{events: [...]}` (with `gaps` when the
 * server said events were lost). With `--follow`, events as they happen until
 * interrupted; `-o json` then prints one JSON object per line (an event, or
 * `{"gap": {...}}`). A dropped connection is resumed after the last event seen
 * (`since`), on the same server, without loss within the retention window.
 */
import { Command, InvalidArgumentError } from "commander";
import { nonNegativeInt } from "./parse.ts";
import { clientOf, type GlobalOpts, withClientOptions } from "./common.ts";
import { printJson, printTable } from "./output.ts";
import { NovaError } from "../core/errors/mod.ts";
import { type ClusterEvent, EVENT_TYPES, type GapNotice, isEventType } from "../core/events/mod.ts";
import { readSse } from "../core/events/sse.ts";

interface EventsOpts extends GlobalOpts {
  follow?: boolean;
  type?: string[];
  resource?: string;
  since?: string;
  tail?: number;
}

/** `--type a,b --type c` → [a, b, c]; an unknown type is bad usage (exit 2). */
function types(value: string, previous: string[] = []): string[] {
  const list = value.split(",").map((t) => t.trim()).filter((t) => t !== "");
  const bad = list.filter((t) => !isEventType(t));
  if (bad.length || !list.length) {
    throw new InvalidArgumentError(
      `unknown event type ${bad.join(", ") || "(none)"}; one or more of ${EVENT_TYPES.join(", ")}`,
    );
  }
  return [...previous, ...list];
}

/** One line of `--follow` output for people. */
function line(e: ClusterEvent): string {
  return [e.at ?? "-", e.id, e.type, e.action, e.resource || "-", summary(e)].join("  ");
}

/** The few details worth a glance, as `k=v`. */
function summary(e: ClusterEvent): string {
  const d = e.details;
  const pick = e.type === "audit"
    ? ["principal", "method", "route", "code"]
    : ["state", "from", "to", "node", "desired", "progress", "error", "reason", "detail", "by"];
  return pick.filter((k) => d[k] !== undefined && d[k] !== null)
    .map((k) => `${k}=${typeof d[k] === "object" ? JSON.stringify(d[k]) : String(d[k])}`)
    .join(" ");
}

function gapText(g: GapNotice): string {
  return `events lost: ${g.message}`;
}

/** `novactl events` (see the module doc). */
export function eventsCommand(): Command {
  const cmd = withClientOptions(
    new Command("events")
      .description("the cluster's events: VM states, operations, nodes, HA actions, audit")
      .option("-f, --follow", "keep printing events as they happen")
      .option(`--type <types>`, `only these types (${EVENT_TYPES.join(", ")}); repeatable`, types)
      .option("--resource <name>", "only events about this VM, node or operation (or kind/name)")
      .option("--since <id>", "only events after this event id (resume)")
      .option(
        "--tail <n>",
        "start with the newest N events (default: 100, 0 with --follow)",
        nonNegativeInt,
      ),
  );
  cmd.action(async (opts: EventsOpts) => {
    const client = clientOf(opts);
    const query = (since: string | undefined) => {
      const q = new URLSearchParams({ follow: opts.follow ? "true" : "false" });
      if (opts.type?.length) q.set("type", [...new Set(opts.type)].join(","));
      if (opts.resource) q.set("resource", opts.resource);
      if (since) q.set("since", since);
      else q.set("tail", String(opts.tail ?? (opts.follow ? 0 : 100)));
      return `/api/v1/events?${q}`;
    };
    if (!opts.follow) {
      const events: ClusterEvent[] = [];
      const gaps: GapNotice[] = [];
      const res = await client.stream(query(opts.since));
      for await (const m of readSse(res.body!)) {
        if (m.event === "gap") gaps.push(JSON.parse(m.data));
        else if (m.id !== undefined) events.push(JSON.parse(m.data));
      }
      if (opts.output === "json") {
        printJson(gaps.length ? { events, gaps } : { events });
        return;
      }
      for (const g of gaps) console.error(gapText(g));
      printTable(
        events.map((e) => ({ ...e, resource: e.resource || null, details: summary(e) })),
        ["at", "id", "type", "action", "resource", "details"],
      );
      return;
    }
    let last = opts.since;
    let failures = 0;
    for (;;) {
      try {
        const res = await client.stream(query(last));
        failures = 0;
        for await (const m of readSse(res.body!)) {
          if (m.event === "gap") {
            const g = JSON.parse(m.data) as GapNotice;
            if (opts.output === "json") console.log(JSON.stringify({ gap: g }));
            else console.error(gapText(g));
          } else if (m.id !== undefined) {
            const e = JSON.parse(m.data) as ClusterEvent;
            last = e.id;
            console.log(opts.output === "json" ? JSON.stringify(e) : line(e));
          }
        }
      } catch (err) {
        // The server refused (bad filter, token): say so. A lost connection: resume.
        if (err instanceof NovaError && err.code !== "unavailable") throw err;
        if (++failures > 30) throw err;
        console.error(`event stream interrupted (${(err as Error).message}); resuming`);
      }
      await new Promise((r) => setTimeout(r, Math.min(5_000, 250 * 2 ** failures)));
    }
  });
  return cmd;
}
