/**
 * A novactl cluster with the test guest imported and a shared pool, for VM benchmarks. Its data
 * dirs go under `dir` (default /dev/shm, a tmpfs: live migration needs it here, see SPEC; pass a
 * directory on disk to include the real fsync cost).
 */
import { clusterFetch } from "./tls.ts";
import { NovactlCluster } from "./novactl_cluster.ts";
import { guestImportArgs, testGuest } from "./guest.ts";

export interface GuestCluster {
  cluster: NovactlCluster;
  base: string;
  api<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T>;
  /** Polls a VM until `check` holds. */
  until(
    name: string,
    check: (vm: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export async function startGuestCluster(
  size: number,
  opts: { dir?: string } = {},
): Promise<GuestCluster> {
  const guest = await testGuest();
  const base = await Deno.makeTempDir({ dir: opts.dir ?? "/dev/shm", prefix: "novactl-bench-" });
  const cluster = new NovactlCluster({ baseDir: base, env: { NOVACTL_ACCEL: "tcg" } });
  await cluster.start(size);
  const url = () => cluster.nodes.find((n) => n.process && !n.process.exited)!.url;
  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await clusterFetch(url() + path, {
      method,
      headers: {
        authorization: `Bearer ${cluster.adminToken}`,
        "content-type": "application/json",
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json)}`);
    return json as T;
  };
  await cluster.cli([
    ...guestImportArgs(guest, "guest"),
    "--server",
    url(),
    "--token",
    cluster.adminToken,
  ]);
  await Deno.mkdir(`${base}/shared`);
  await api("PATCH", "/api/v1/config", { "storage.sharedDir": `${base}/shared` });
  const until = async (
    name: string,
    check: (vm: Record<string, unknown>) => boolean,
    timeoutMs = 60_000,
  ) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const vm = await api<Record<string, unknown>>("GET", `/api/v1/vms/${name}`).catch(() => null);
      if (vm && check(vm)) return vm;
      if (Date.now() > deadline) {
        throw new Error(`${name}: condition not met; last ${JSON.stringify(vm)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return {
    cluster,
    base,
    api,
    until,
    stop: async () => {
      await cluster.stop();
      await Deno.remove(base, { recursive: true }).catch(() => {});
    },
  };
}
