/// <reference lib="dom" />
/** Sign-in and the list pages (overview, VMs, images, groups, operations, alerts, audit). */
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, ApiError, type NodeView, type OperationView, saveToken, type VmView } from "./api.ts";
import { ActionButton, ago, Badge, bytes, ErrorBox, messageOf, Page, useApi } from "./common.tsx";
import { subscribe } from "./events.ts";

export function SignIn({ onSignedIn, notice }: { onSignedIn: () => void; notice: string | null }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(notice);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("/nodes", { token: token.trim() });
      saveToken(token.trim());
      onSignedIn();
    } catch (err) {
      setError(
        err instanceof ApiError && err.status === 401
          ? `This token was refused: ${err.message}. Check it, or ask an admin for a new one ` +
            "(novactl token create)."
          : `Could not sign in: ${messageOf(err)}`,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <form onSubmit={submit}>
        <h1>novactl</h1>
        <label>
          API token
          <input
            name="token"
            type="password"
            autocomplete="off"
            value={token}
            onInput={(e) => setToken((e.target as HTMLInputElement).value)}
            required
          />
        </label>
        <button type="submit" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
        <ErrorBox error={error} />
      </form>
    </main>
  );
}

interface HostStats {
  current: { cpuPercent: number; load1: number; memoryUsedBytes: number; vms: number } | null;
}

function NodeLoad({ name }: { name: string }) {
  const { data } = useApi<HostStats>(`/nodes/${encodeURIComponent(name)}/stats?since=5m`);
  const c = data?.current;
  if (!c) return <span class="muted">—</span>;
  return <span>{c.cpuPercent.toFixed(0)}% CPU, load {c.load1.toFixed(2)}, {c.vms} VMs</span>;
}

interface ClusterStatus {
  clusterId: string;
  leader: string | null;
  term: number;
  commitIndex: number;
  members: { name: string; state: string; role: string; lastContactMs: number | null }[];
}

export function Overview() {
  const { data, error, reload } = useApi<{ nodes: NodeView[] }>("/nodes");
  const status = useApi<ClusterStatus>("/cluster");
  useEffect(() => {
    const both = () => {
      reload();
      status.reload();
    };
    const off = subscribe((e) => (e === "gap" || e.type === "node") && both());
    // Health and load change without events.
    const t = setInterval(both, 5000);
    return () => {
      off();
      clearInterval(t);
    };
  }, []);
  const nodes = data?.nodes ?? [];
  // "none" only once the cluster said so: before its first answer the leader is unknown.
  const leader = status.data ? status.data.leader ?? "none" : "…";
  // Health as the leader sees it (`/cluster` answers from the leader): a follower hears only
  // from the leader, so its own /nodes shows the other followers as offline.
  const health = new Map(status.data?.members.map((m) => [m.name, m.state]) ?? []);
  return (
    <Page title="Cluster">
      <ErrorBox error={error ?? status.error} />
      <p class="summary">
        <strong data-testid="node-count">{nodes.length}</strong> nodes · leader{" "}
        <strong data-testid="leader">{leader}</strong>
        {status.data && (
          <span class="muted">
            {` · term ${status.data.term} · commit ${status.data.commitIndex} · cluster ${status.data.clusterId}`}
          </span>
        )}
      </p>
      <table class="grid" data-testid="nodes">
        <thead>
          <tr>
            <th>Node</th>
            <th>Health</th>
            <th>Role</th>
            <th>Load</th>
            <th>CPUs</th>
            <th>Memory</th>
            <th>Disk free</th>
            <th>Address</th>
          </tr>
        </thead>
        <tbody>
          {nodes.map((n) => (
            <tr key={n.name} data-node={n.name}>
              <td>{n.name}</td>
              <td>
                <Badge value={health.get(n.name) ?? n.state} />
              </td>
              <td>
                {n.name === leader ? <strong>leader</strong> : n.role ?? "—"}
                {n.name === leader && n.role ? ` (${n.role})` : ""}
              </td>
              <td>
                <NodeLoad name={n.name} />
              </td>
              <td>{n.inventory?.cpus ?? "—"}</td>
              <td>{n.inventory ? bytes(n.inventory.memoryMiB * 2 ** 20) : "—"}</td>
              <td>{n.inventory ? `${n.inventory.diskFreeGiB} GiB` : "—"}</td>
              <td class="muted">{n.url}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Page>
  );
}

const PAGE = 100;
const RENDERED_MARK = "novactl:vm-list-rendered";
const STATES = ["", "pending", "scheduled", "starting", "running", "stopping", "stopped", "failed"];

/**
 * The VM list: one page of the API at a time (the API pages by name), patched in place by
 * the event stream, so 1,000 VMs cost one small request and one small render.
 */
export function VmList() {
  const [state, setState] = useState("");
  const [search, setSearch] = useState("");
  const [vms, setVms] = useState<VmView[] | null>(null);
  const [cursor, setCursor] = useState<string | null>(null);
  const [stack, setStack] = useState<(string | null)[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [creating, setCreating] = useState(false);
  const [n, setN] = useState(0);
  const [all, setAll] = useState<VmView[] | null>(null);

  useEffect(() => {
    const ac = new AbortController();
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (state) q.set("state", state);
    if (cursor) q.set("continue", cursor);
    api<{ vms: VmView[]; continue?: string }>(`/vms?${q}`, { signal: ac.signal }).then((r) => {
      setVms(r.vms);
      setNext(r.continue ?? null);
      setError(null);
    }).catch((e) => !ac.signal.aborted && setError(messageOf(e)));
    return () => ac.abort();
  }, [state, cursor, n]);

  // When the first page of VMs is on screen (effects run after the browser paints): what
  // bench:ui measures.
  useEffect(() => {
    if (vms && !performance.getEntriesByName(RENDERED_MARK).length) {
      performance.mark(RENDERED_MARK);
    }
  }, [vms]);

  // A search looks at every VM's name: the API filters by state, node and label, not by
  // name, so the whole list is read once (1,000 names at most per request).
  useEffect(() => {
    if (!search || all) return;
    const ac = new AbortController();
    (async () => {
      const out: VmView[] = [];
      let cont: string | undefined;
      do {
        const q = new URLSearchParams({ limit: "1000" });
        if (cont) q.set("continue", cont);
        const r = await api<{ vms: VmView[]; continue?: string }>(`/vms?${q}`, {
          signal: ac.signal,
        });
        out.push(...r.vms);
        cont = r.continue;
      } while (cont);
      setAll(out);
    })().catch((e) => !ac.signal.aborted && setError(messageOf(e)));
    return () => ac.abort();
  }, [search, all !== null]);

  const refetch = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  const patch = useRef<(name: string, f: (v: VmView) => VmView | null) => void>(() => {});
  patch.current = (name, f) => {
    const upd = (list: VmView[] | null) => {
      if (!list) return list;
      const i = list.findIndex((v) => v.name === name);
      if (i < 0) return list;
      const v = f(list[i]);
      const copy = list.slice();
      if (v) copy[i] = v;
      else copy.splice(i, 1);
      return copy;
    };
    setVms(upd);
    setAll(upd);
  };

  useEffect(() =>
    subscribe((e) => {
      if (e === "gap") return setN((x) => x + 1);
      if (e.type !== "vm") return;
      const d = e.details;
      if (e.action === "vm.deleted") return patch.current(e.resource, () => null);
      if (e.action === "vm.created") {
        // Where it lands in name order is the API's to say: read the page again, once for
        // a burst of creates.
        clearTimeout(refetch.current);
        refetch.current = setTimeout(() => {
          setN((x) => x + 1);
          setAll(null);
        }, 300);
        return;
      }
      patch.current(e.resource, (v) => ({
        ...v,
        state: typeof d.state === "string" ? d.state : v.state,
        node: typeof d.node === "string" ? d.node : v.node,
        desired: typeof d.desired === "string" ? d.desired : v.desired,
      }));
    }), []);

  const shown = useMemo(() => {
    if (!search) return vms ?? [];
    const s = search.toLowerCase();
    return (all ?? vms ?? []).filter((v) =>
      (!state || v.state === state) &&
      (v.name.toLowerCase().includes(s) || (v.node ?? "").includes(s) ||
        Object.entries(v.labels).some(([k, x]) => `${k}=${x}`.includes(s)))
    );
  }, [vms, all, search, state]);

  return (
    <Page
      title="Virtual machines"
      actions={<button type="button" onClick={() => setCreating(!creating)}>Create VM</button>}
    >
      {creating && (
        <CreateVm
          onCreated={() => {
            setCreating(false);
            setN((x) => x + 1);
          }}
        />
      )}
      <div class="filters">
        <input
          type="search"
          placeholder="Search name, node, label"
          aria-label="Search"
          value={search}
          onInput={(e) => setSearch((e.target as HTMLInputElement).value)}
        />
        <select
          aria-label="State"
          value={state}
          onChange={(e) => {
            setState((e.target as HTMLSelectElement).value);
            setCursor(null);
            setStack([]);
          }}
        >
          {STATES.map((s) => <option key={s} value={s}>{s || "any state"}</option>)}
        </select>
      </div>
      <ErrorBox error={error} />
      {vms === null ? <p class="muted">Loading…</p> : (
        <table class="grid" data-testid="vms">
          <thead>
            <tr>
              <th>Name</th>
              <th>State</th>
              <th>Node</th>
              <th>CPUs</th>
              <th>Memory</th>
              <th>Image</th>
              <th>Labels</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((v) => <VmRow key={v.name} vm={v} />)}
          </tbody>
        </table>
      )}
      {!search && (
        <div class="pager">
          <button
            type="button"
            disabled={!stack.length}
            onClick={() => {
              setCursor(stack[stack.length - 1] ?? null);
              setStack(stack.slice(0, -1));
            }}
          >
            Previous
          </button>
          <button
            type="button"
            disabled={!next}
            onClick={() => {
              setStack([...stack, cursor]);
              setCursor(next);
            }}
          >
            Next
          </button>
        </div>
      )}
    </Page>
  );
}

function VmRow({ vm }: { vm: VmView }) {
  return (
    <tr data-vm={vm.name}>
      <td>
        <a href={`/ui/vms/${encodeURIComponent(vm.name)}`}>{vm.name}</a>
      </td>
      <td>
        <Badge value={vm.state} />
      </td>
      <td>{vm.node ?? "—"}</td>
      <td>{vm.cpus}</td>
      <td>{vm.memoryMiB} MiB</td>
      <td>{vm.image}</td>
      <td class="muted">{Object.entries(vm.labels).map(([k, v]) => `${k}=${v}`).join(" ")}</td>
    </tr>
  );
}

function CreateVm({ onCreated }: { onCreated: (name: string) => void }) {
  const images = useApi<{ images: { name: string }[] }>("/images");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.target as HTMLFormElement);
    const body: Record<string, unknown> = {
      name: String(f.get("name")),
      image: String(f.get("image")),
      cpus: Number(f.get("cpus")),
      memoryMiB: Number(f.get("memoryMiB")),
    };
    if (f.get("diskGiB")) body.diskGiB = Number(f.get("diskGiB"));
    if (f.get("node")) body.node = String(f.get("node"));
    if (f.get("userData")) body.cloudInit = { userData: String(f.get("userData")) };
    setBusy(true);
    setError(null);
    try {
      const vm = await api<VmView>("/vms", { method: "POST", body });
      onCreated(vm.name);
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="card create" onSubmit={submit} aria-label="Create VM">
      <label>
        Name <input name="name" required pattern="[a-z0-9][a-z0-9-]*" />
      </label>
      <label>
        Image{" "}
        <select name="image" required>
          {(images.data?.images ?? []).map((i) => (
            <option key={i.name} value={i.name}>{i.name}</option>
          ))}
        </select>
      </label>
      <label>
        CPUs <input name="cpus" type="number" min="1" value="1" />
      </label>
      <label>
        Memory (MiB) <input name="memoryMiB" type="number" min="64" value="256" />
      </label>
      <label>
        Disk (GiB) <input name="diskGiB" type="number" min="1" placeholder="image size" />
      </label>
      <label>
        Node <input name="node" placeholder="scheduler decides" />
      </label>
      <label>
        User data <textarea name="userData" rows={3} placeholder="#cloud-config (optional)" />
      </label>
      <button type="submit" disabled={busy}>{busy ? "Creating…" : "Create"}</button>
      <ErrorBox error={error ?? images.error} />
    </form>
  );
}

export function Images() {
  const { data, error, reload } = useApi<{ images: Record<string, unknown>[] }>("/images");
  return (
    <Page title="Images">
      <ErrorBox error={error} />
      <table class="grid">
        <thead>
          <tr>
            <th>Name</th>
            <th>Kind</th>
            <th>Size</th>
            <th>Sources</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {(data?.images ?? []).map((i) => {
            const blob = (i.disk ?? i.kernel) as { size?: number } | undefined;
            return (
              <tr key={String(i.name)}>
                <td>{String(i.name)}</td>
                <td>{String(i.kind)}</td>
                <td>{bytes(blob?.size)}</td>
                <td>{((i.sources as string[]) ?? []).join(", ")}</td>
                <td>
                  <ActionButton
                    label="Delete"
                    danger
                    confirm={`Delete image ${i.name}?`}
                    run={async () => {
                      await api(`/images/${encodeURIComponent(String(i.name))}`, {
                        method: "DELETE",
                      });
                      reload();
                    }}
                  />
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </Page>
  );
}

export function Groups() {
  const { data, error } = useApi<{ groups: Record<string, unknown>[] }>("/groups");
  return (
    <Page title="Placement groups">
      <ErrorBox error={error} />
      <table class="grid">
        <thead>
          <tr>
            <th>Name</th>
            <th>Policy</th>
            <th>Members</th>
          </tr>
        </thead>
        <tbody>
          {(data?.groups ?? []).map((g) => (
            <tr key={String(g.name)}>
              <td>{String(g.name)}</td>
              <td>{String(g.policy ?? g.kind ?? "—")}</td>
              <td>{((g.members as string[]) ?? []).join(", ") || "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && !data.groups.length && <p class="muted">No groups.</p>}
    </Page>
  );
}

export function progressText(p: Record<string, unknown>): string {
  const parts = Object.entries(p).filter(([, v]) => typeof v !== "object")
    .map(([k, v]) => `${k}: ${v}`);
  return parts.join(", ") || "—";
}

export function Operations() {
  const { data, error, reload } = useApi<{ operations: OperationView[] }>("/operations");
  useEffect(() => subscribe((e) => (e === "gap" || e.type === "operation") && reload()), []);
  const ops = (data?.operations ?? []).slice().sort((a, b) =>
    b.createdAt.localeCompare(a.createdAt)
  );
  return (
    <Page title="Operations">
      <ErrorBox error={error} />
      <table class="grid">
        <thead>
          <tr>
            <th>Id</th>
            <th>Kind</th>
            <th>Target</th>
            <th>State</th>
            <th>Progress</th>
            <th>By</th>
            <th>Started</th>
          </tr>
        </thead>
        <tbody>
          {ops.map((o) => (
            <tr key={o.id}>
              <td>{o.id}</td>
              <td>{o.kind}</td>
              <td>{o.target}</td>
              <td>
                <Badge value={o.state} />
              </td>
              <td>{o.error ?? progressText(o.progress)}</td>
              <td>{o.by}</td>
              <td>{ago(o.createdAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Page>
  );
}

export function Alerts() {
  const [all, setAll] = useState(true);
  const { data, error } = useApi<{ alerts: Record<string, unknown>[] }>(`/alerts?all=${all}`);
  const rules = useApi<{ rules: Record<string, unknown>[] }>("/alerts/rules");
  return (
    <Page
      title="Alerts"
      actions={
        <label>
          <input
            type="checkbox"
            checked={all}
            onChange={(e) => setAll((e.target as HTMLInputElement).checked)}
          />{" "}
          include resolved
        </label>
      }
    >
      <ErrorBox error={error ?? rules.error} />
      <table class="grid">
        <thead>
          <tr>
            <th>Rule</th>
            <th>Subject</th>
            <th>State</th>
            <th>Value</th>
            <th>Fired</th>
            <th>Resolved</th>
          </tr>
        </thead>
        <tbody>
          {(data?.alerts ?? []).map((a, i) => (
            <tr key={i}>
              <td>{String(a.rule)}</td>
              <td>{String(a.subject ?? a.labels ? JSON.stringify(a.labels) : "—")}</td>
              <td>
                <Badge value={String(a.state ?? (a.resolvedAt ? "resolved" : "firing"))} />
              </td>
              <td>{String(a.value ?? "—")}</td>
              <td>{ago(a.firedAt as string)}</td>
              <td>{a.resolvedAt ? ago(a.resolvedAt as string) : "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Rules</h2>
      <table class="grid">
        <thead>
          <tr>
            <th>Name</th>
            <th>Metric</th>
            <th>Condition</th>
            <th>For</th>
          </tr>
        </thead>
        <tbody>
          {(rules.data?.rules ?? []).map((r) => (
            <tr key={String(r.name)}>
              <td>{String(r.name)}</td>
              <td>{String(r.metric)}</td>
              <td>{r.above !== undefined ? `> ${r.above}` : `< ${r.below}`}</td>
              <td>{r.forSeconds !== undefined ? `${r.forSeconds} s` : "—"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Page>
  );
}

export function Audit() {
  const { data, error } = useApi<{ entries: Record<string, unknown>[] }>("/audit?limit=200");
  return (
    <Page title="Audit log">
      <ErrorBox error={error} />
      <table class="grid">
        <thead>
          <tr>
            <th>When</th>
            <th>Principal</th>
            <th>Request</th>
            <th>Target</th>
            <th>Status</th>
            <th>From</th>
          </tr>
        </thead>
        <tbody>
          {(data?.entries ?? []).map((a, i) => (
            <tr key={i}>
              <td>{new Date(Number(a.at) || String(a.at)).toLocaleString()}</td>
              <td>{String(a.principal)}</td>
              <td>
                {String(a.method)} {String(a.path ?? a.route)}
              </td>
              <td>{String(a.target ?? "—")}</td>
              <td>{String(a.status)}</td>
              <td class="muted">{String(a.remote ?? a.client ?? "—")}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Page>
  );
}
