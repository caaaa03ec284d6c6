/**
 * Live migration benchmark for a 256 MiB guest, in two separate modes:
 *
 * - shared disk: the disk stays on the shared pool; only RAM and device state move;
 * - local disk: the disk is on the host's own pool and is first mirrored to the destination over
 *   NBD (`blockdev-mirror`), then RAM and device state move.
 *
 * Each mode runs novactl side by side with its anchors, bare QEMU → QEMU on this machine by hand
 * over QMP with the same guest, the same disk placement (one file both open / a blank copy
 * mirrored over NBD) and the same migration parameters, once in plain TCP and once over TLS as
 * novactl migrates (`tls-creds-x509` with verify-peer on both ends, an `authz-list` admitting
 * the source's certificate, for the memory stream and the NBD mirror alike): bare plain against
 * bare TLS is what TLS costs QEMU itself, novactl against bare TLS what novactl adds. The three
 * are interleaved run by run in a rotating order. Figures, each a `Figure` over `--runs`:
 *
 * - `commandToDoneMs`: novactl, `POST /api/v1/vms/NAME/migrate` → the operation `succeeded` as the
 *   client sees it (the whole orchestration: placement, destination prepare, mirror, memory,
 *   Raft commit of the move, resume, retiring the source); bare, destination QEMU launched → guest
 *   resumed there and the source quit.
 * - `qemuTotalMs`, `qemuDowntimeMs`: QEMU's own `query-migrate` `total-time` (the memory phase,
 *   `migrate` → completed) and `downtime`, on both sides.
 * - `guestPausedMs`: the source's QMP STOP event to the destination's RESUME event (QEMU's own
 *   timestamps) on both sides. Bare QEMU resumes by itself on completion; novactl resumes after the
 *   Raft commit of the move, which is what its extra pause is.
 *
 * Data dirs are on tmpfs (/dev/shm): migration from images on the ext4 root fails here (SPEC).
 *
 *   deno task bench:migrate [--runs 5]
 *
 * Writes bench/results/migrate.json (`MigrateBenchResult`).
 */
import { type GuestCluster, startGuestCluster } from "./lib/guest_cluster.ts";
import { type Figure, figure } from "./lib/figures.ts";
import type { QmpClient, QmpEvent } from "../host/kvm/mod.ts";
import { QemuDriver } from "../host/kvm/mod.ts";
import { launchBare, quitBare } from "./lib/bare_qemu.ts";
import { DirPool } from "../host/storage/mod.ts";
import { fetchConsole } from "./lib/guest.ts";
import { type RunMeta, runMeta } from "./lib/run_meta.ts";
import { sleep, waitFor } from "./lib/util.ts";
import { qemuUser } from "../host/kvm/mod.ts";
import { buildQemuCredsDir } from "../host/kvm/tls.ts";
import { addAuthzList, addTlsCredsX509, deleteObject } from "../host/kvm/commands.ts";
import { createCa, createNodeKeyAndCsr, signCsr } from "../core/pki/mod.ts";

/** One side (novactl or bare QEMU) of one mode; every figure in ms over all runs. */
export interface MigrateSide {
  /** The table row's name, e.g. "shared disk: novactl". */
  label: string;
  commandToDoneMs: Figure;
  qemuTotalMs: Figure;
  qemuDowntimeMs: Figure;
  guestPausedMs: Figure;
}

export type MigrateMode = "sharedDisk" | "localDiskNbd";

/** What bench/results/migrate.json holds. */
export interface MigrateBenchResult {
  meta: RunMeta;
  setup: {
    nodes: number;
    memoryMiB: number;
    diskGiB: number;
    runs: number;
    /** The cluster's `migration.downtimeLimitMs`, also set on the bare source. */
    downtimeLimitMs: number;
    /** The cluster's `migration.maxBandwidthMiBs`, also set on the bare source. */
    maxBandwidthMiBs: number;
    order: "rotating: novactl, bare, bare TLS; then bare, bare TLS, novactl; …";
  };
  modes: Record<MigrateMode, { novactl: MigrateSide; bare: MigrateSide; bareTls: MigrateSide }>;
}

interface Sample {
  commandToDoneMs: number;
  qemuTotalMs: number;
  qemuDowntimeMs: number;
  guestPausedMs: number;
}

const runsArg = Deno.args.indexOf("--runs");
const RUNS = runsArg >= 0 ? Number(Deno.args[runsArg + 1]) : 5;
const outArg = Deno.args.indexOf("--out");
const OUT = outArg >= 0
  ? Deno.args[outArg + 1]
  : new URL("./results/migrate.json", import.meta.url).pathname;
const NODES = 3;
const MEMORY = 256;
const DISK_BYTES = 2 ** 30;
const MODES: MigrateMode[] = ["sharedDisk", "localDiskNbd"];

interface MigrationParams {
  downtimeLimitMs: number;
  maxBandwidthMiBs: number;
}

interface MigrateInfo {
  status: string;
  "total-time"?: number;
  downtime?: number;
  "socket-address"?: { type: string; port?: string }[];
}

/** TLS for the bare anchor: a QEMU credentials directory (CA, one certificate for "bare"). */
interface BareTls {
  credsDir: string;
}

const BARE_SERVER_CREDS = "bench-tls-server";
const BARE_CLIENT_CREDS = "bench-tls-client";
const BARE_AUTHZ = "bench-tls-authz";

/** A CA and a certificate for "bare" (127.0.0.1), laid out as novactl lays out a node's. */
async function bareTls(root: string): Promise<BareTls> {
  const ca = await createCa("bench");
  const { keyPem, csrPem } = await createNodeKeyAndCsr("bare", ["127.0.0.1"]);
  const certPem = await signCsr(ca, csrPem, { name: "bare", sans: ["127.0.0.1"] });
  const files = { caCert: `${root}/ca.crt`, cert: `${root}/node.crt`, key: `${root}/node.key` };
  await Deno.writeTextFile(files.caCert, ca.certPem);
  await Deno.writeTextFile(files.cert, certPem);
  await Deno.writeTextFile(files.key, keyPem, { mode: 0o600 });
  return { credsDir: await buildQemuCredsDir(files, await qemuUser()) };
}

function eventMs(e: QmpEvent): number {
  return e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
}

/**
 * The anchor: one guest migrated back and forth between QEMU processes on this machine by hand
 * over QMP, each time into a fresh destination, as novactl does. The destination listens on port
 * 0 and says which port it got; the NBD export is on a unix socket (no port to pick at all).
 */
class BareGuest {
  #qmp: QmpClient | null = null;
  #dir = "";
  #n = 0;

  constructor(
    readonly root: string,
    private readonly mode: MigrateMode,
    private readonly params: MigrationParams,
    private readonly tls: BareTls | null,
  ) {}

  /** Boots the guest and waits for its ready line on the console. */
  async start(): Promise<void> {
    const { qmp, dir } = await this.#launch([]);
    [this.#qmp, this.#dir] = [qmp, dir];
    const console = new QemuDriver(dir).paths("bare").console;
    await waitFor(
      async () =>
        (await Deno.readTextFile(console).catch(() => "")).includes("NOVACTL-GUEST-READY") ||
        undefined,
      { timeoutMs: 60_000, description: "the bare guest's ready line" },
    );
  }

  /** A QEMU in its own directory; with a local disk, its own blank disk (the destination's). */
  async #launch(extraArgs: string[]): Promise<{ qmp: QmpClient; dir: string }> {
    const dir = `${this.root}/q${this.#n++}`;
    const disk = this.mode === "sharedDisk" ? `${this.root}/shared` : `${dir}/pool`;
    const pool = await new DirPool(disk).init();
    const volume = await pool.has("bare")
      ? await pool.info("bare")
      : await pool.create("bare", DISK_BYTES);
    const qmp = await launchBare(dir, {
      name: "bare",
      memoryMiB: MEMORY,
      disk: volume.path,
      extraArgs,
    });
    return { qmp, dir };
  }

  async migrateOnce(): Promise<Sample> {
    const src = this.#qmp!;
    const t0 = performance.now();
    const dst = await this.#launch(["-incoming", "defer"]);
    if (this.tls) await this.#tlsBothEnds(src, dst.qmp, this.tls);
    await dst.qmp.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
    const port = (await dst.qmp.execute<MigrateInfo>("query-migrate"))["socket-address"]?.[0]?.port;
    if (!port) throw new Error("the destination did not report its migration port");
    if (this.mode === "localDiskNbd") await this.#mirror(src, dst.qmp, `${dst.dir}/nbd.sock`);
    await src.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "events", state: true }],
    });
    await src.execute("migrate-set-parameters", {
      "downtime-limit": this.params.downtimeLimitMs,
      "max-bandwidth": this.params.maxBandwidthMiBs * 2 ** 20,
    });
    const stopped = src.waitForEvent("STOP", { timeoutMs: 120_000 });
    const resumed = dst.qmp.waitForEvent("RESUME", { timeoutMs: 120_000 });
    const finished = src.waitForEvent("MIGRATION", {
      timeoutMs: 120_000,
      match: (e) => ["completed", "failed", "cancelled"].includes(String(e.data?.status)),
    });
    await src.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
    if ((await finished).data?.status !== "completed") throw new Error("bare migration failed");
    const paused = eventMs(await stopped);
    const running = eventMs(await resumed);
    const info = await this.#completedInfo(src);
    if (this.mode === "localDiskNbd") {
      await src.execute("block-job-cancel", { device: "mig-mirror", force: true }).catch(() => {});
      await dst.qmp.execute("nbd-server-stop").catch(() => {});
    }
    await quitBare(src);
    const commandToDoneMs = performance.now() - t0;
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
    [this.#qmp, this.#dir] = [dst.qmp, dst.dir];
    return {
      commandToDoneMs,
      qemuTotalMs: info["total-time"] ?? NaN,
      qemuDowntimeMs: info.downtime ?? NaN,
      guestPausedMs: Math.max(0, running - paused),
    };
  }

  /**
   * As novactl does: the destination demands a certificate from the CA and admits only the
   * source's; the source checks the destination's against the CA and the name 127.0.0.1.
   */
  async #tlsBothEnds(src: QmpClient, dst: QmpClient, tls: BareTls): Promise<void> {
    await addTlsCredsX509(dst, BARE_SERVER_CREDS, tls.credsDir, "server");
    await addAuthzList(dst, BARE_AUTHZ, ["CN=bare"]);
    await dst.execute("migrate-set-parameters", {
      "tls-creds": BARE_SERVER_CREDS,
      "tls-authz": BARE_AUTHZ,
    });
    await deleteObject(src, BARE_CLIENT_CREDS);
    await addTlsCredsX509(src, BARE_CLIENT_CREDS, tls.credsDir, "client");
    await src.execute("migrate-set-parameters", {
      "tls-creds": BARE_CLIENT_CREDS,
      "tls-hostname": "127.0.0.1",
    });
  }

  /** Right after the completion event the statistics may not be filled in yet. */
  async #completedInfo(src: QmpClient): Promise<MigrateInfo> {
    for (;;) {
      const info = await src.execute<MigrateInfo>("query-migrate");
      if (info["total-time"]) return info;
      await sleep(5);
    }
  }

  /** The destination exports its blank disk over NBD; the source mirrors into it until in sync. */
  async #mirror(src: QmpClient, dst: QmpClient, socket: string): Promise<void> {
    const serverTls = this.tls ? { "tls-creds": BARE_SERVER_CREDS, "tls-authz": BARE_AUTHZ } : {};
    const clientTls = this.tls
      ? { "tls-creds": BARE_CLIENT_CREDS, "tls-hostname": "127.0.0.1" }
      : {};
    await dst.execute("nbd-server-start", {
      addr: { type: "unix", data: { path: socket } },
      ...serverTls,
    });
    await dst.execute("block-export-add", {
      type: "nbd",
      id: "mig-root",
      "node-name": "root",
      name: "root",
      writable: true,
    });
    await src.execute("blockdev-add", {
      driver: "nbd",
      "node-name": "mig-target",
      server: { type: "unix", path: socket },
      export: "root",
      ...clientTls,
    });
    const ready = src.waitForEvent("BLOCK_JOB_READY", { timeoutMs: 120_000 });
    await src.execute("blockdev-mirror", {
      "job-id": "mig-mirror",
      device: "root",
      target: "mig-target",
      sync: "full",
    });
    await ready;
  }

  async stop(): Promise<void> {
    if (this.#qmp) await quitBare(this.#qmp);
  }
}

interface OperationView {
  state: string;
  error: string | null;
  result: Record<string, number>;
}

/** One novactl migration of `name` to wherever the scheduler puts it, timed from the client. */
async function novactlMigrateOnce(g: GuestCluster, name: string): Promise<Sample> {
  const t0 = performance.now();
  const op = await g.api<{ id: string }>("POST", `/api/v1/vms/${name}/migrate`, {});
  const done = await g.api<OperationView>(
    "GET",
    `/api/v1/operations/${op.id}/wait?timeoutMs=120000`,
  );
  const commandToDoneMs = performance.now() - t0;
  if (done.state !== "succeeded") throw new Error(`${name}: ${done.state}: ${done.error}`);
  await g.until(name, (v) => v.state === "running" && !v.migration);
  return {
    commandToDoneMs,
    qemuTotalMs: done.result.totalMs,
    qemuDowntimeMs: done.result.qemuDowntimeMs,
    guestPausedMs: done.result.guestPausedMs,
  };
}

async function createNovactlGuest(g: GuestCluster, mode: MigrateMode): Promise<string> {
  const name = mode === "sharedDisk" ? "mig-shared" : "mig-local";
  await g.api("POST", "/api/v1/vms", {
    name,
    image: "guest",
    memoryMiB: MEMORY,
    node: "n1",
    pool: mode === "sharedDisk" ? "shared" : "dir",
  });
  await g.until(name, (v) => v.state === "running");
  const url = g.cluster.node("n1").url;
  await waitFor(
    async () =>
      (await fetchConsole(url, g.cluster.adminToken, name)).includes("NOVACTL-GUEST-READY") ||
      undefined,
    { timeoutMs: 60_000, description: `${name}'s ready line` },
  );
  return name;
}

type Side = "novactl" | "bare" | "bareTls";
const SIDES: Side[] = ["novactl", "bare", "bareTls"];

/** Run r's order: the sides rotated by r, so none is always first (or always right after another). */
function rotation(r: number): Side[] {
  return SIDES.map((_, i) => SIDES[(i + r) % SIDES.length]);
}

const MODE_LABELS: Record<MigrateMode, string> = {
  sharedDisk: "shared disk",
  localDiskNbd: "local disk, NBD mirror",
};

function side(label: string, samples: Sample[]): MigrateSide {
  return {
    label,
    commandToDoneMs: figure(samples.map((s) => s.commandToDoneMs), 1),
    qemuTotalMs: figure(samples.map((s) => s.qemuTotalMs), 1),
    qemuDowntimeMs: figure(samples.map((s) => s.qemuDowntimeMs), 1),
    guestPausedMs: figure(samples.map((s) => s.guestPausedMs), 1),
  };
}

const g = await startGuestCluster(NODES); // tmpfs: see the module doc
const bareRoot = await Deno.makeTempDir({ dir: g.base, prefix: "bare-" });
const bares: BareGuest[] = [];
let tls: BareTls | null = null;
try {
  const meta0 = await runMeta("migrate", { dataDir: g.base, runs: RUNS });
  const { config } = await g.api<{ config: Record<string, number> }>("GET", "/api/v1/config");
  const params: MigrationParams = {
    downtimeLimitMs: config["migration.downtimeLimitMs"],
    maxBandwidthMiBs: config["migration.maxBandwidthMiBs"],
  };
  tls = await bareTls(bareRoot);
  const samples = Object.fromEntries(
    MODES.map((
      m,
    ): [MigrateMode, Record<Side, Sample[]>] => [m, { novactl: [], bare: [], bareTls: [] }]),
  ) as Record<MigrateMode, Record<Side, Sample[]>>;
  // One mode at a time: three idle TCG guests are background load enough on 2 CPUs.
  for (const mode of MODES) {
    const plain = new BareGuest(`${bareRoot}/${mode}`, mode, params, null);
    const overTls = new BareGuest(`${bareRoot}/${mode}-tls`, mode, params, tls);
    for (const bare of [plain, overTls]) {
      await Deno.mkdir(bare.root);
      bares.push(bare);
      await bare.start();
    }
    const name = await createNovactlGuest(g, mode);
    const run: Record<Side, () => Promise<Sample>> = {
      novactl: () => novactlMigrateOnce(g, name),
      bare: () => plain.migrateOnce(),
      bareTls: () => overTls.migrateOnce(),
    };
    for (let r = 0; r < RUNS; r++) {
      for (const side of rotation(r)) samples[mode][side].push(await run[side]());
      console.log(
        `run ${r + 1} ${mode}: ` +
          SIDES.map((side) => `${side} ${JSON.stringify(samples[mode][side].at(-1))}`).join(" "),
      );
    }
    for (const bare of bares.splice(0)) await bare.stop().catch(() => {});
    await g.api("DELETE", `/api/v1/vms/${name}?force=true`);
  }
  const result: MigrateBenchResult = {
    meta: { ...meta0, date: new Date().toISOString() },
    setup: {
      nodes: NODES,
      memoryMiB: MEMORY,
      diskGiB: DISK_BYTES / 2 ** 30,
      runs: RUNS,
      ...params,
      order: "rotating: novactl, bare, bare TLS; then bare, bare TLS, novactl; …",
    },
    modes: Object.fromEntries(
      MODES.map((m) => [m, {
        novactl: side(`${MODE_LABELS[m]}: novactl`, samples[m].novactl),
        bare: side(`${MODE_LABELS[m]}: bare QEMU (anchor)`, samples[m].bare),
        bareTls: side(`${MODE_LABELS[m]}: bare QEMU over TLS (anchor)`, samples[m].bareTls),
      }]),
    ) as MigrateBenchResult["modes"],
  };
  console.log(JSON.stringify(result.modes, null, 2));
  await Deno.writeTextFile(OUT, JSON.stringify(result, null, 2) + "\n");
  console.log(`wrote ${OUT}`);
} finally {
  for (const bare of bares) await bare.stop().catch(() => {});
  if (tls) await Deno.remove(tls.credsDir, { recursive: true }).catch(() => {});
  await g.stop();
}
