/**
 * One qemu-system-x86_64 process per VM. QEMU runs in a session of its own so
 * VMs outlive the node process; a restarted node finds them again through the
 * pidfile and the QMP socket in the VM's run directory. An HA VM instead runs
 * in a PID namespace tied to the host's fencing watchdog (host/fencing), which
 * kills it when the lease runs out and takes it along when it dies itself; the
 * watchdog writes its pidfile (with the host pid, not the namespace's).
 *
 * QEMU is confined (host/kvm/confine.ts): it drops root for its own user once
 * it has opened the disks, console log and sockets, and runs under seccomp.
 * Its filter forbids fork, so QEMU is not asked to `-daemonize`: the node
 * starts it through `setsid`, with stderr appended to the VM's `qemu.log`.
 */
import { join } from "node:path";
import { ConflictError, NovaError, TimeoutError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import { writeFileDurably } from "../../core/store/mod.ts";
import type { Accel } from "./accel.ts";
import { cont, queryStatus, quit, systemPowerdown } from "./commands.ts";
import { confinementArgs, type QemuUser, qemuUser } from "./confine.ts";
import { QmpClient } from "./qmp.ts";
import { GuestAgent } from "./qga.ts";
import { qemuBinaryVersion, type QemuVersion } from "./qemu_version.ts";

export interface DiskSpec {
  /** Stable id: QEMU node name and device id. */
  id: string;
  path: string;
  format: "qcow2" | "raw";
  readOnly?: boolean;
  /**
   * The disk root port an attached volume sits on ({@link diskPortId}); absent: the root bus
   * (not hot-pluggable).
   */
  port?: number;
  /** The attached volume it is (reported as plugged: core/fsm/vm_devices.ts); absent: older specs. */
  volume?: string;
}

export interface NicSpec {
  id: string;
  mac: string;
  /**
   * A tap device made for this NIC (host/ovs/nic.ts) on a network's bridge; absent: user-mode
   * networking, restricted.
   */
  tap?: string;
  /**
   * The PCIe root port the NIC sits on ({@link nicPortId}); set for NICs on networks: their
   * NIC index, so a NIC hot-plugged later has the same slot on a migration's destination,
   * where it is on the command line.
   */
  port?: number;
}

/**
 * PCIe root ports a VM with NICs on networks gets, one per possible NIC (core/fsm/vm_nics.ts
 * MAX_NICS): on q35 only a root port can take a hot-plugged device, and every port must
 * exist from the start. They sit at fixed slots (0x10 + port on pcie.0), clear of the
 * devices QEMU places itself from slot 1 up.
 */
export const NIC_PORTS = 8;

/**
 * PCIe root ports every VM launched by this version gets for volumes (core/fsm/vm_disks.ts
 * MAX_ATTACHED), at fixed functions 0x18.port on pcie.0: a volume hot-plugged later needs a
 * free port that existed from the start, and the same slot on a migration's destination.
 */
export const DISK_PORTS = 8;

/**
 * A VM's display device: "vga" is QEMU's standard VGA, which the VNC console shows (the BIOS,
 * a kernel's text console, a framebuffer driver's screen); "none", no display device, and the
 * VNC console shows QEMU's own "no graphic display device" placeholder.
 */
export type Display = "vga" | "none";

/**
 * Video memory of the VGA device: enough for 1024x768 at 32 bits (a framebuffer driver's
 * default mode), small beside guest RAM and cheap to migrate (mostly zero pages).
 */
export const VGA_MEM_MB = 4;

/**
 * Where the VGA device sits on pcie.0: a fixed slot well clear of those QEMU hands out from 1
 * up, so adding it moves no other device a guest already knows (a NIC's name follows its slot).
 */
export const VGA_ADDR = "0x1e";

/** The QEMU id of disk root port `port`. */
export function diskPortId(port: number): string {
  return `nvdp${port}`;
}

/** The QEMU id of NIC root port `port`. */
export function nicPortId(port: number): string {
  return `nvrp${port}`;
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
  /** An HA VM: started by the fencing watchdog, jailed in a PID namespace, never daemonized. */
  fenced?: boolean;
  /**
   * With the {@link DISK_PORTS} root ports for volumes. Absent on QEMUs launched before disk
   * hot-plug; an incoming migration copies the source's choice (the devices must match).
   */
  diskPorts?: boolean;
  /**
   * Serial on a unix socket (still logged to the console file) and VNC on another: interactive
   * consoles. Absent on QEMUs launched before them, whose serial is a plain file: re-adopted,
   * they keep running with the log alone.
   */
  consoles?: boolean;
  /**
   * The display device ({@link Display}). Absent on QEMUs launched before displays: none. The
   * device set must match wherever guest state moves, so an incoming migration copies its
   * source's and a memory snapshot is loaded with the one it was saved with.
   */
  display?: Display;
}

/** The display a launch spec (or a record of one) has: absent means none. */
export function displayOf(spec: { display?: Display }): Display {
  return spec.display === "vga" ? "vga" : "none";
}

/** Starts a process that dies with the host's fencing watchdog (see host/fencing). */
export interface FencedSpawner {
  /**
   * Starts `argv` so that it dies with the watchdog, stderr appended to `logPath`, its host pid
   * written to `pidfile`; returns that pid.
   */
  spawn(name: string, argv: string[], logPath: string, pidfile: string): Promise<number>;
}

/** QEMU could not open a disk because another QEMU holds its lock (image locking). */
export class DiskLockedError extends ConflictError {
  constructor(readonly vm: string, readonly disk: string) {
    super(`disk ${disk} of ${vm} is locked by another QEMU`, { disk });
  }
}

export interface VmPaths {
  dir: string;
  pidfile: string;
  qmp: string;
  qga: string;
  console: string;
  /** The serial chardev's socket (the node is its one client; host/console). */
  serial: string;
  /** QEMU's VNC server (RFB), relayed by the node only. */
  vnc: string;
  launch: string;
  /** QEMU's own messages (startup errors); only ever appended to. */
  stderr: string;
}

/** sun_path holds 108 bytes including the terminator. */
const MAX_SOCKET_PATH = 107;

export class QemuDriver {
  /** Starts HA VMs under fencing; without it an HA VM cannot start. */
  fencedSpawner: FencedSpawner | null = null;
  /** The user QEMU drops to (`-runas`); null: it keeps the node's. Set by {@link init}. */
  user: QemuUser | null = null;
  /** The release of {@link binary}, which some options depend on. Set by {@link init}. */
  version: QemuVersion | null = null;

  /** `binary`: found on PATH unless a path, so another QEMU can be put first on PATH. */
  constructor(readonly vmRoot: string, readonly binary = "qemu-system-x86_64") {}

  async init(): Promise<this> {
    await Deno.mkdir(this.vmRoot, { recursive: true, mode: 0o700 });
    this.user = await qemuUser();
    this.version = await qemuBinaryVersion(this.binary);
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
      serial: join(dir, "serial.sock"),
      vnc: join(dir, "vnc.sock"),
      launch: join(dir, "launch.json"),
      stderr: join(dir, "qemu.log"),
    };
    const longest = [p.qmp, p.qga, p.serial, p.vnc].reduce((a, b) => b.length > a.length ? b : a);
    if (longest.length > MAX_SOCKET_PATH) {
      throw new NovaError(
        "internal",
        `socket path ${longest} is longer than ${MAX_SOCKET_PATH} bytes; use a shorter --data-dir`,
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
    if (!this.version) throw new NovaError("internal", "QemuDriver.init() was not called");
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
      ...confinementArgs(this.user, this.version),
      // An HA QEMU's pid in its PID namespace is not the host's: its jail writes the pidfile.
      ...(spec.fenced ? [] : ["-pidfile", p.pidfile]),
      "-msg",
      "timestamp=on",
      "-chardev",
      `socket,id=qmp,path=${p.qmp},server=on,wait=off`,
      "-mon",
      "chardev=qmp,mode=control",
      "-chardev",
      spec.consoles
        // logappend: QEMU opens the log O_APPEND, so rotation (./console.ts) still works, and
        // it logs what the guest writes whether or not anyone is attached.
        ? `socket,id=serial0,path=${p.serial},server=on,wait=off,logfile=${p.console},logappend=on`
        : `file,id=serial0,path=${p.console},append=on`,
      "-serial",
      "chardev:serial0",
      // No password: the socket is in the VM's run directory (0700), reached only through
      // the node's authenticated relay.
      ...(spec.consoles ? ["-vnc", `unix:${p.vnc}`] : []),
      ...(displayOf(spec) === "vga"
        ? ["-device", `VGA,id=video0,vgamem_mb=${VGA_MEM_MB},bus=pcie.0,addr=${VGA_ADDR}`]
        : []),
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
    if (spec.diskPorts) {
      for (let i = 0; i < DISK_PORTS; i++) {
        a.push(
          "-device",
          // One slot, eight functions: q35 keeps slot 0x1f for its LPC bridge.
          `pcie-root-port,id=${diskPortId(i)},bus=pcie.0,chassis=${17 + i},addr=0x18.${i}` +
            (i === 0 ? ",multifunction=on" : ""),
        );
      }
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
        `virtio-blk-pci,drive=${d.id},id=${d.id}-dev${i === 0 ? ",bootindex=1" : ""}` +
          (d.port !== undefined && spec.diskPorts ? `,bus=${diskPortId(d.port)}` : ""),
      );
    });
    if (spec.nics.some((n) => n.port !== undefined)) {
      for (let i = 0; i < NIC_PORTS; i++) {
        a.push(
          "-device",
          `pcie-root-port,id=${nicPortId(i)},bus=pcie.0,chassis=${i + 1},addr=0x${
            (0x10 + i).toString(16)
          }`,
        );
      }
    }
    for (const n of spec.nics) {
      a.push(
        "-netdev",
        n.tap
          // vnet_hdr=off: OVS's userspace datapath forwards packets whose checksum the guest
          // left to offload unfinished, and TCP then fails silently (measured; SPEC.md facts).
          ? `tap,id=${n.id},ifname=${n.tap},script=no,downscript=no,vnet_hdr=off`
          // restrict=on: user-mode networking maps 10.0.2.2 to the host's loopback, where the
          // node's own services listen; restricted, the guest reaches nothing outside the VM
          // (DHCP still answers).
          : `user,id=${n.id},restrict=on`,
        "-device",
        // No PXE option ROM: nothing boots from the network, and it saves startup time.
        `virtio-net-pci,netdev=${n.id},id=${n.id}-dev,mac=${n.mac},romfile=` +
          (n.port === undefined ? "" : `,bus=${nicPortId(n.port)}`),
      );
    }
    if (spec.loadvm) a.push("-loadvm", spec.loadvm);
    if (spec.incoming) a.push("-incoming", spec.incoming);
    return a;
  }

  /**
   * Starts QEMU paused and returns once its QMP socket is up. QEMU reports
   * configuration errors (a locked disk, a bad option) on stderr before it
   * serves QMP; they come back as the error's message.
   */
  async launch(spec: LaunchSpec): Promise<QemuVm> {
    const p = this.paths(spec.name);
    await Deno.mkdir(p.dir, { recursive: true, mode: 0o700 });
    await Deno.remove(p.pidfile).catch(() => {});
    await writeFileDurably(p.launch, JSON.stringify(spec, null, 2) + "\n");
    await Deno.writeTextFile(p.stderr, "");
    const argv = [this.binary, ...this.args(spec, p)];
    if (spec.fenced) {
      if (!this.fencedSpawner) {
        throw new NovaError(
          "unavailable",
          `no fencing watchdog on this host to run HA VM ${spec.name}`,
        );
      }
      return await this.waitServing(
        spec,
        p,
        await this.fencedSpawner.spawn(spec.name, argv, p.stderr, p.pidfile),
      );
    }
    return await this.waitServing(spec, p, spawnDetached(argv, p.stderr));
  }

  /** Up once QEMU (pid `pid`) serves QMP; its own stderr says why when it exits first. */
  private async waitServing(spec: LaunchSpec, p: VmPaths, pid: number): Promise<QemuVm> {
    const deadline = performance.now() + 30_000;
    for (;;) {
      if (!processAlive(pid)) {
        const stderr = await Deno.readTextFile(p.stderr).catch(() => "");
        throw startFailure(spec, stderr, "QEMU exited while starting");
      }
      const vm = await this.adopt(spec.name).catch(() => null);
      if (vm?.pid === pid) return vm;
      vm?.close();
      if (performance.now() > deadline) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
        throw new TimeoutError(`qemu for ${spec.name} did not serve QMP within 30 s`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
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

  /**
   * Records what a running QEMU now has (a NIC hot-plugged or removed), so a restarted node
   * that re-adopts it knows its devices.
   */
  async saveLaunchSpec(spec: LaunchSpec): Promise<void> {
    await writeFileDurably(this.paths(spec.name).launch, JSON.stringify(spec, null, 2) + "\n");
  }

  async readLaunchSpec(name: string): Promise<LaunchSpec | null> {
    try {
      return JSON.parse(await Deno.readTextFile(this.paths(name).launch));
    } catch {
      return null;
    }
  }
}

/**
 * QEMU's reason for not starting, from its stderr: every line it printed
 * about the failure, without timestamps; never empty. A lock conflict on a
 * disk becomes a {@link DiskLockedError}.
 */
export function startFailure(spec: LaunchSpec, stderr: string, fallback: string): NovaError {
  const lines = stderr.split("\n")
    .map((l) => l.replace(/^\S+Z\s+/, "").replace(/^qemu-system-\S+: /, "").trim())
    .filter(Boolean);
  if (lines.some((l) => /Failed to get ".*" lock/.test(l))) {
    const disk = spec.disks.find((d) => lines.some((l) => l.includes(d.path)))?.id ?? "?";
    return new DiskLockedError(spec.name, disk);
  }
  const message = lines.slice(-3).join("; ") || fallback;
  return new NovaError("internal", `qemu failed to start ${spec.name}: ${message}`);
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
    return await queryStatus(this.qmp, 30_000);
  }

  async cont(): Promise<void> {
    await cont(this.qmp, 30_000);
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
      await systemPowerdown(this.qmp, 2_000);
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
      await quit(this.qmp, 2_000);
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

/**
 * Starts `argv` in a session of its own (it outlives the node and no terminal signal reaches
 * it), stderr appended to `logPath`; returns its pid. `sh` and `setsid` exec, so the pid is
 * QEMU's (`setsid` need not fork: a child of the node leads no process group).
 */
export function spawnDetached(argv: string[], logPath: string): number {
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", 'log="$1"; shift; exec setsid "$@" 2>>"$log"', "sh", logPath, ...argv],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  child.unref();
  child.status.catch(() => {}); // reaped by the runtime; its end is seen through /proc
  return child.pid;
}
