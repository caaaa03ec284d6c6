/// <reference lib="dom" />
/** Small pieces every page uses: loading a resource, errors, state badges, tables. */
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { api, ApiError } from "./api.ts";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  reload: () => void;
}

/** GETs `path` (again when it changes or on `reload`). */
export function useApi<T>(path: string | null): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    if (path === null) return;
    const ac = new AbortController();
    api<T>(path, { signal: ac.signal }).then((d) => {
      setData(d);
      setError(null);
    }).catch((e) => {
      if (!ac.signal.aborted) setError(messageOf(e));
    });
    return () => ac.abort();
  }, [path, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return { data, error, reload };
}

export function messageOf(e: unknown): string {
  if (e instanceof ApiError) return `${e.message} (${e.status} ${e.code})`;
  return e instanceof Error ? e.message : String(e);
}

export function ErrorBox({ error }: { error: string | null }) {
  return error ? <p class="error" role="alert">{error}</p> : null;
}

const GOOD = new Set(["running", "ready", "healthy", "succeeded", "resolved", "leader", "alive"]);
const BAD = new Set([
  "failed",
  "offline",
  "error",
  "down",
  "dead",
  "firing",
  "aborted",
  "unreachable",
]);

export function Badge({ value }: { value: string | null | undefined }) {
  const v = value ?? "—";
  const cls = GOOD.has(v) ? "ok" : BAD.has(v) ? "bad" : "mid";
  return <span class={`badge ${cls}`} data-state={v}>{v}</span>;
}

export function Page(
  { title, actions, children }: {
    title: string;
    actions?: ComponentChildren;
    children: ComponentChildren;
  },
) {
  return (
    <section class="page">
      <header class="page-head">
        <h1>{title}</h1>
        <div class="actions">{actions}</div>
      </header>
      {children}
    </section>
  );
}

export function ago(iso: string | null | undefined): string {
  if (!iso) return "—";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return new Date(iso).toLocaleString();
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

/** A button that runs `run`, shows it running, and reports a failure beside itself. */
export function ActionButton(
  { label, run, confirm: ask, danger, disabled }: {
    label: string;
    run: () => Promise<unknown>;
    confirm?: string;
    danger?: boolean;
    disabled?: boolean;
  },
) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const click = async () => {
    if (ask && !confirm(ask)) return;
    setBusy(true);
    setError(null);
    try {
      await run();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <span class="action">
      <button
        type="button"
        class={danger ? "danger" : ""}
        disabled={busy || disabled}
        onClick={click}
      >
        {busy ? `${label}…` : label}
      </button>
      {error && <span class="error" role="alert">{error}</span>}
    </span>
  );
}
