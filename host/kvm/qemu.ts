/**
 * One qemu-system-x86_64 process per VM. QEMU daemonizes itself so VMs
 * outlive the node process; a restarted node finds them again through the
 * pidfile and the QMP socket in the VM's run directory.
 */
import { join } from "node:path";
import { NovaError, TimeoutError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import { writeFileDurably } from "../../core/store/mod.ts";
import type { Accel } from "./accel.ts";
import { QmpClient } from "./qmp.ts";
import { GuestAgent } from "./qga.ts";

export interface DiskSpec {
  /** Stable id: QEMU node name and device id. */
  id: string;
  path: string;
  format: "qcow2" | "raw";
  readOnly?: boolean;
}

export interface NicSpec {
  id: string;
  mac: string;
}

/** Everything needed to (re)launch a VM, stored beside it so re-adoption knows what runs. */
export interface LaunchSpec {
  name: string;
  uuid: string;
  cpus: number;
  memoryMiB: number;
  accel: Accel;
  kernel?: { path: string; initrd?: string; cmdline?: string };
  disks: DiskSpec[];
  nics: NicSpec[];
  /** Start from a memory snapshot (`-loadvm`). */
  loadvm?: string;
  /** Wait for an incoming migration stream on this URI instead of booting. */
  incoming?: string;
  /** Opaque to QEMU: what the host agent needs to know about this incarnation. */
  generation: number;
}

export interface VmPaths {
  dir: string;
  pidfile: string;
  qmp: string;
  qga: string;
  console: string;
  launch: string;
}

/** sun_path holds 108 bytes including the terminator. */
const MAX_SOCKET_PATH = 107;

export class QemuDriver {
  constructor(readonly vmRoot: string, readonly binary = "qemu-system-x86_64") {}

  async init(): Promise<this> {
    await Deno.mkdir(this.vmRoot, { recursive: true, mode: 0o700 });
    return this;
  }

  paths(name: string): VmPaths {
    const dir = join(this.vmRoot, name);
    const p = {
      dir,
      pidfile: join(dir, "qemu.pid"),
      qmp: join(dir, "qmp.sock"),
      qga: join(dir, "qga.sock"),
      console: join(dir, "console.log"),
      launch: join(dir, "launch.json"),
    };
    if (p.qmp.length > MAX_SOCKET_PATH) {
      throw new NovaError(
        "internal",
        `socket path ${p.qmp} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter --data-dir`,
      );
    }
    return p;
  }

  /** Names of VMs that have a run directory here (running or not). */
  async known(): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const e of Deno.readDir(this.vmRoot)) if (e.isDirectory) out.push(e.name);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    return out.sort();
  }

  args(spec: LaunchSpec, p: VmPaths): string[] {
    const a = [
      "-name",
      `guest=${spec.name},debug-threads=on`,
      "-uuid",
      spec.uuid,
      "-machine",
      "q35",
      "-accel",
      spec.accel,
      "-cpu",
      spec.accel === "kvm" ? "host" : "max",
      "-smp",
      String(spec.cpus),
      "-m",
      `${spec.memoryMiB}M`,
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-S",
      "-daemonize",
      "-pidfile",
      p.pidfile,
      "-msg",
      "timestamp=on",
      "-chardev",
      `socket,id=qmp,path=${p.qmp},server=on,wait=off`,
      "-mon",
      "chardev=qmp,mode=control",
      "-chardev",
      `file,id=serial0,path=${p.console},append=on`,
      "-serial",
      "chardev:serial0",
      "-chardev",
      `socket,id=qga0,path=${p.qga},server=on,wait=off`,
      "-device",
      "virtio-serial-pci,id=vser0",
      "-device",
      "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
    ];
    if (spec.kernel) {
      a.push("-kernel", spec.kernel.path);
      if (spec.kernel.initrd) a.push("-initrd", spec.kernel.initrd);
      if (spec.kernel.cmdline) a.push("-append", spec.kernel.cmdline);
    }
    spec.disks.forEach((d, i) => {
      const ro = !!d.readOnly;
      a.push(
        "-blockdev",
        JSON.stringify({
          "node-name": d.id,
          driver: d.format,
          "read-only": ro,
          file: { driver: "file", filename: d.path, "read-only": ro },
        }),
        "-device",
        `virtio-blk-pci,drive=${d.id},id=${d.id}-dev${i === 0 ? ",bootindex=1" : ""}`,
      );
    });
    for (const n of spec.nics) {
      a.push(
        "-netdev",
        `user,id=${n.id}`,
        "-device",
        // No PXE option ROM: nothing boots from the network, and it saves startup time.
        `virtio-net-pci,netdev=${n.id},id=${n.id}-dev,mac=${n.mac},romfile=`,
      );
    }
    if (spec.loadvm) a.push("-loadvm", spec.loadvm);
    if (spec.incoming) a.push("-incoming", spec.incoming);
    return a;
  }

  /**
   * Starts QEMU paused and returns once its QMP socket is up. QEMU reports
   * configuration errors before it daemonizes, so they arrive here as text.
   */
  async launch(spec: LaunchSpec): Promise<QemuVm> {
    const p = this.paths(spec.name);
    await Deno.mkdir(p.dir, { recursive: true, mode: 0o700 });
    await Deno.remove(p.pidfile).catch(() => {});
    await writeFileDurably(p.launch, JSON.stringify(spec, null, 2) + "\n");
    const child = new Deno.Command(this.binary, {
      args: this.args(spec, p),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const out = await child.output();
    clearTimeout(timer);
    if (!out.success) {
      const msg = new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
      throw new NovaError("internal", `qemu failed to start ${spec.name}: ${msg}`);
    }
    const vm = await this.adopt(spec.name);
    if (!vm) throw new NovaError("internal", `qemu for ${spec.name} exited right after starting`);
    return vm;
  }

  /** Finds the QEMU of a VM by its pidfile and connects to it; null when none runs. */
  async adopt(name: string): Promise<QemuVm | null> {
    const p = this.paths(name);
    const pid = await readPid(p.pidfile);
    if (pid === null || !(await isQemuOf(pid, p.qmp))) return null;
    let spec: LaunchSpec;
    try {
      spec = JSON.parse(await Deno.readTextFile(p.launch));
    } catch {
      return null;
    }
    // Generous: on a saturated host (dozens of guests booting) QEMU answers slowly, not never.
    const qmp = await QmpClient.connect(p.qmp, { timeoutMs: 30_000 });
    return new QemuVm(name, pid, spec, p, qmp);
  }

  /** Removes the run directory of a VM whose QEMU is gone (sockets, console, pidfile). */
  async cleanup(name: string): Promise<void> {
    await Deno.remove(this.paths(name).dir, { recursive: true }).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }

  async readLaunchSpec(name: string): Promise<LaunchSpec | null> {
    try {
      return JSON.parse(await Deno.readTextFile(this.paths(name).launch));
    } catch {
      return null;
    }
  }
}

async function readPid(pidfile: string): Promise<number | null> {
  try {
    const pid = Number((await Deno.readTextFile(pidfile)).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Guards against pid reuse: the process must be a QEMU serving this VM's QMP socket. */
async function isQemuOf(pid: number, qmpPath: string): Promise<boolean> {
  try {
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`);
    return cmdline.includes(`path=${qmpPath},`);
  } catch {
    return false;
  }
}

export function processAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // A zombie has exited; only its parent's wait is missing.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

export type RunStatus = "prelaunch" | "paused" | "running" | "inmigrate" | "postmigrate" | string;

/** A live QEMU process and its QMP connection. */
export class QemuVm {
  private agentClient: GuestAgent | null = null;

  constructor(
    readonly name: string,
    readonly pid: number,
    readonly spec: LaunchSpec,
    readonly paths: VmPaths,
    readonly qmp: QmpClient,
  ) {}

  get agent(): GuestAgent {
    this.agentClient ??= new GuestAgent(this.paths.qga);
    return this.agentClient;
  }

  alive(): boolean {
    return processAlive(this.pid);
  }

  async status(): Promise<RunStatus> {
    const s = await this.qmp.execute<{ status: string }>("query-status", {}, { timeoutMs: 30_000 });
    return s.status;
  }

  async cont(): Promise<void> {
    await this.qmp.execute("cont", {}, { timeoutMs: 30_000 });
  }

  /**
   * Asks the guest to power off (agent first, ACPI otherwise) and waits up to
   * `timeoutMs`; then quits QEMU and, if even that hangs, kills it.
   */
  async stop(opts: { timeoutMs: number; force?: boolean }): Promise<"graceful" | "forced"> {
    if (!opts.force && await this.requestPowerOff()) {
      // A guest still booting may miss the first ACPI event (no handler yet): ask again.
      const deadline = Date.now() + opts.timeoutMs;
      while (Date.now() < deadline) {
        if (await this.waitExit(Math.min(3_000, deadline - Date.now()))) return "graceful";
        if (Date.now() < deadline) await this.requestPowerOff();
      }
      log.warn("guest did not power off in time; quitting QEMU", {
        vm: this.name,
        timeoutMs: opts.timeoutMs,
      });
    }
    await this.kill();
    return "forced";
  }

  private async requestPowerOff(): Promise<boolean> {
    try {
      if (await this.agent.ping(1_000)) {
        await this.agent.shutdown("powerdown");
        return true;
      }
    } catch (err) {
      log.debug("agent shutdown failed; using ACPI", { vm: this.name, error: String(err) });
    }
    try {
      await this.qmp.execute("system_powerdown", {}, { timeoutMs: 2_000 });
      return true;
    } catch (err) {
      log.warn("system_powerdown failed", { vm: this.name, error: String(err) });
      return false;
    }
  }

  /** `quit`, then SIGKILL if QEMU does not go away. */
  async kill(): Promise<void> {
    if (!this.alive()) return this.close();
    try {
      await this.qmp.execute("quit", {}, { timeoutMs: 2_000 });
    } catch { /* the socket closes as QEMU exits; a hung QEMU is killed below */ }
    if (!(await this.waitExit(3_000))) {
      try {
        Deno.kill(this.pid, "SIGKILL");
      } catch { /* already gone */ }
      if (!(await this.waitExit(5_000))) {
        throw new TimeoutError(`QEMU pid ${this.pid} of ${this.name} survived SIGKILL`);
      }
    }
    this.close();
  }

  /** Resolves true once the process is gone, false after `timeoutMs`. */
  async waitExit(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.alive()) return true;
      await new Promise((r) => setTimeout(r, 50));
    }
    return !this.alive();
  }

  close(): void {
    this.qmp.close();
    this.agentClient?.close();
  }
}
