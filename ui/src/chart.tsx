/// <reference lib="dom" />
/** The VM's history (`GET /vms/NAME/stats?since=1h`) as uPlot charts. */
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { ErrorBox, useApi } from "./common.tsx";

interface Stats {
  points: ({ t: string } & Record<string, number | null>)[];
  stepSeconds: number;
}

const CHARTS: { title: string; unit: string; series: [string, string][] }[] = [
  { title: "CPU", unit: "%", series: [["cpuPercent", "CPU %"]] },
  {
    title: "Memory",
    unit: "MiB",
    series: [["memoryBytes", "RSS"], ["balloonBytes", "balloon"]],
  },
  {
    title: "Disk",
    unit: "B/s",
    series: [["diskReadBytesPerSec", "read"], ["diskWriteBytesPerSec", "write"]],
  },
  {
    title: "Network",
    unit: "B/s",
    series: [["netRxBytesPerSec", "rx"], ["netTxBytesPerSec", "tx"]],
  },
];
const COLORS = ["#2563eb", "#dc2626"];

export function StatsCharts({ path }: { path: string }) {
  const { data, error, reload } = useApi<Stats>(path);
  useEffect(() => {
    const t = setInterval(reload, 5_000);
    return () => clearInterval(t);
  }, []);
  return (
    <div class="charts">
      <ErrorBox error={error} />
      {data && !data.points.length && <p class="muted">No samples yet.</p>}
      {data && data.points.length > 0 &&
        CHARTS.map((c) => <Chart key={c.title} stats={data} spec={c} />)}
    </div>
  );
}

function Chart({ stats, spec }: { stats: Stats; spec: typeof CHARTS[number] }) {
  const el = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    const xs = stats.points.map((p) => Date.parse(p.t) / 1000);
    const scale = spec.unit === "MiB" ? 2 ** 20 : 1;
    const ys = spec.series.map(([f]) =>
      stats.points.map((p) => (p[f] === null || p[f] === undefined ? null : p[f]! / scale))
    );
    const data = [xs, ...ys] as uPlot.AlignedData;
    if (plot.current) {
      plot.current.setData(data);
      return;
    }
    plot.current = new uPlot(
      {
        title: `${spec.title} (${spec.unit})`,
        width: Math.min(560, el.current!.clientWidth || 560),
        height: 180,
        series: [{}, ...spec.series.map(([, label], i) => ({ label, stroke: COLORS[i] }))],
      },
      data,
      el.current!,
    );
  }, [stats]);
  useEffect(() => () => plot.current?.destroy(), []);
  return <div class="chart" ref={el} />;
}
