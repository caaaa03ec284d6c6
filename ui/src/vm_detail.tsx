/// <reference lib="dom" />
/**
 * One VM: its state live from the event stream, actions, disks, NICs, snapshots, stats
 * charts and the consoles (loaded on first use: xterm.js and noVNC are most of the bytes).
 */
import { lazy, Suspense } from "preact/compat";
import { useEffect, useState } from "preact/hooks";
import { api, type NodeView, type OperationView, type VmView } from "./api.ts";
import { ActionButton, ago, Badge, bytes, ErrorBox, Page, useApi } from "./common.tsx";
import { subscribe } from "./events.ts";
import { progressText } from "./pages.tsx";
import { navigate } from "./router.ts";
import { StatsCharts } from "./chart.tsx";

const SerialConsole = lazy(() => import("./console.tsx").then((m) => m.SerialConsole));
const VncConsole = lazy(() => import("./console.tsx").then((m) => m.VncConsole));

const TABS = ["overview", "stats", "serial", "vnc"] as const;
type Tab = typeof TABS[number];
const TAB_NAMES: Record<Tab, string> = {
  overview: "Overview",
  stats: "Stats",
  serial: "Serial console",
  vnc: "Graphical console",
};

export default function VmDetail({ name }: { name: string }) {
  const path = `/vms/${encodeURIComponent(name)}`;
  const { data: vm, error, reload } = useApi<VmView>(path);
  const [tab, setTab] = useState<Tab>("overview");
  const [opId, setOpId] = useState<string | null>(null);
  useEffect(() =>
    subscribe((e) => {
      if (e === "gap" || (e.type === "vm" && e.resource === name)) reload();
      if (e !== "gap" && e.type === "vm" && e.resource === name && e.action === "vm.deleted") {
        navigate("/vms");
      }
    }), [name]);

  const post = (sub: string, body: unknown = {}) =>
    api(`${path}/${sub}`, { method: "POST", body }).then(reload);

  return (
    <Page
      title={name}
      actions={vm && (
        <>
          <Badge value={vm.state} />
          <ActionButton label="Start" run={() => post("start")} />
          <ActionButton label="Stop" run={() => post("stop")} />
          <ActionButton label="Restart" run={() => post("restart")} />
          <MigrateButton vm={vm} onStarted={setOpId} />
          <ActionButton
            label="Delete"
            danger
            confirm={`Delete VM ${name} and its disks? This cannot be undone.`}
            run={async () => {
              await api(path, { method: "DELETE" });
              navigate("/vms");
            }}
          />
        </>
      )}
    >
      <ErrorBox error={error} />
      {opId && <OperationProgress id={opId} onDone={reload} />}
      <nav class="tabs" role="tablist">
        {TABS.map((t) => (
          <button
            type="button"
            key={t}
            role="tab"
            aria-selected={tab === t}
            class={tab === t ? "on" : ""}
            onClick={() => setTab(t)}
          >
            {TAB_NAMES[t]}
          </button>
        ))}
      </nav>
      {vm && tab === "overview" && (
        <VmOverview vm={vm} path={path} reload={reload} onOperation={setOpId} />
      )}
      {tab === "stats" && <StatsCharts path={`${path}/stats?since=1h`} />}
      <Suspense fallback={<p class="muted">Loading console…</p>}>
        {tab === "serial" && <SerialConsole name={name} />}
        {tab === "vnc" && <VncConsole name={name} />}
      </Suspense>
    </Page>
  );
}

function VmOverview({ vm, path, reload, onOperation }: {
  vm: VmView;
  path: string;
  reload: () => void;
  /** Snapshot calls answer with their operation: its progress shows above. */
  onOperation: (id: string) => void;
}) {
  // Below cluster level 2 they run at once and answer with their result: nothing to follow.
  const snapshotOp = (sub: string, method: string, body?: unknown) =>
    api<Partial<OperationView>>(`${path}/snapshots${sub}`, { method, body }).then((op) => {
      if (typeof op.id === "string" && typeof op.kind === "string") onOperation(op.id);
      reload();
    });
  const nics = useApi<{ nics: Record<string, unknown>[] }>(`${path}/nics`);
  const [snap, setSnap] = useState("");
  return (
    <div class="detail">
      <dl class="facts">
        <dt>State</dt>
        <dd data-testid="vm-state">{vm.state} (desired {vm.desired})</dd>
        {vm.reason && (
          <>
            <dt>Reason</dt>
            <dd>{vm.reason}</dd>
          </>
        )}
        <dt>Node</dt>
        <dd data-testid="vm-node">{vm.node ?? "—"}</dd>
        <dt>Image</dt>
        <dd>{vm.image}</dd>
        <dt>CPUs / memory</dt>
        <dd>
          {vm.cpus} / {vm.memoryMiB} MiB
        </dd>
        <dt>HA</dt>
        <dd>{vm.ha ? "yes" : "no"}</dd>
        <dt>Guest addresses</dt>
        <dd>{vm.guest?.ips?.join(", ") || "—"}</dd>
        <dt>Created</dt>
        <dd>{ago(vm.createdAt)}</dd>
      </dl>
      <h2>Disks</h2>
      <table class="grid">
        <thead>
          <tr>
            <th>Name</th>
            <th>Size</th>
            <th>Pool / volume</th>
          </tr>
        </thead>
        <tbody>
          {vm.disks.map((d, i) => (
            <tr key={i}>
              <td>{String(d.name ?? d.id ?? i)}</td>
              <td>{d.sizeGiB !== undefined ? `${d.sizeGiB} GiB` : bytes(d.sizeBytes as number)}</td>
              <td class="muted">{String(d.pool ?? d.volume ?? d.path ?? "—")}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Network interfaces</h2>
      <table class="grid">
        <thead>
          <tr>
            <th>NIC</th>
            <th>Network</th>
            <th>Address</th>
            <th>MAC</th>
          </tr>
        </thead>
        <tbody>
          {(nics.data?.nics ?? []).map((n, i) => (
            <tr key={i}>
              <td>{String(n.name ?? n.id ?? i)}</td>
              <td>{String(n.network ?? "user")}</td>
              <td>{String(n.ip ?? "—")}</td>
              <td>{String(n.mac ?? "—")}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {nics.data && !nics.data.nics.length && (
        <p class="muted">No NICs on networks: the VM has QEMU's one user-mode NIC.</p>
      )}
      <h2>Snapshots</h2>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
        }}
      >
        <input
          aria-label="Snapshot name"
          placeholder="snapshot name"
          value={snap}
          onInput={(e) => setSnap((e.target as HTMLInputElement).value)}
        />
        <ActionButton
          label="Take snapshot"
          disabled={!snap}
          run={async () => {
            await snapshotOp("", "POST", { name: snap });
            setSnap("");
          }}
        />
      </form>
      <table class="grid">
        <thead>
          <tr>
            <th>Name</th>
            <th>Taken</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {vm.snapshots.map((s) => (
            <tr key={s.name}>
              <td>{s.name}</td>
              <td>{ago(s.createdAt)}</td>
              <td>
                <ActionButton
                  label="Restore"
                  confirm={`Restore ${vm.name} to snapshot ${s.name}?`}
                  run={() => snapshotOp(`/${encodeURIComponent(s.name)}/restore`, "POST")}
                />
                <ActionButton
                  label="Delete"
                  danger
                  confirm={`Delete snapshot ${s.name}?`}
                  run={() => snapshotOp(`/${encodeURIComponent(s.name)}`, "DELETE")}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function MigrateButton({ vm, onStarted }: { vm: VmView; onStarted: (id: string) => void }) {
  const nodes = useApi<{ nodes: NodeView[] }>("/nodes");
  const [to, setTo] = useState("");
  // Once the VM has moved, the node it went to is no longer a target.
  useEffect(() => setTo(""), [vm.node]);
  const targets = (nodes.data?.nodes ?? []).filter((n) => n.name !== vm.node);
  return (
    <span class="migrate">
      <select
        aria-label="Migrate to"
        value={to}
        onChange={(e) => setTo((e.target as HTMLSelectElement).value)}
      >
        <option value="">scheduler's choice</option>
        {targets.map((n) => <option key={n.name} value={n.name}>{n.name}</option>)}
      </select>
      <ActionButton
        label="Migrate"
        run={async () => {
          const op = await api<OperationView>(
            `/vms/${encodeURIComponent(vm.name)}/migrate`,
            { method: "POST", body: to ? { to } : {} },
          );
          onStarted(op.id);
        }}
      />
    </span>
  );
}

/** An operation's progress, refreshed by its events (and a slow poll, in case one is missed). */
function OperationProgress({ id, onDone }: { id: string; onDone: () => void }) {
  const { data, reload } = useApi<OperationView>(`/operations/${encodeURIComponent(id)}`);
  useEffect(() => {
    const off = subscribe((e) => e !== "gap" && e.resource === id && reload());
    const t = setInterval(reload, 3000);
    return () => {
      off();
      clearInterval(t);
    };
  }, [id]);
  useEffect(() => {
    if (data && data.state !== "running") onDone();
  }, [data?.state]);
  if (!data) return null;
  const p = data.progress;
  // The last progress report may be from before the end: a finished operation is done.
  const pct = data.state === "succeeded"
    ? 100
    : typeof p.percent === "number"
    ? p.percent
    : typeof p.transferred === "number" && typeof p.total === "number" && p.total > 0
    ? (100 * p.transferred) / p.total
    : null;
  return (
    <div class="card op" data-testid="operation">
      {data.kind} {data.id}: <Badge value={data.state} />{" "}
      {pct !== null && <progress max={100} value={pct} />}{" "}
      {data.error ?? (data.state === "running" ? progressText(p) : "")}
    </div>
  );
}
