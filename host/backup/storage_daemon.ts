/**
 * A `qemu-storage-daemon` that opens a stopped VM's volumes so a backup can
 * run the same QMP commands as on a running QEMU (dirty bitmaps, backup jobs).
 * It holds the images' locks while it runs (a start of the VM waits for the
 * backup: both run under the VM's host lock) and, on `quit`, stores the
 * persistent bitmaps in the qcow2 files as QEMU does.
 *
 * @module
 */
import { join } from "node:path";
import { NovaError } from "../../core/errors/mod.ts";
import { QmpClient } from "../kvm/qmp.ts";
import { quit } from "../kvm/commands.ts";

/** A volume to open: its block node name and qcow2 file. */
export interface DaemonDisk {
  node: string;
  path: string;
}

/** A running storage daemon and its QMP connection. */
export class StorageDaemon {
  private constructor(
    readonly qmp: QmpClient,
    private readonly child: Deno.ChildProcess,
    private readonly dir: string,
  ) {}

  /** Starts the daemon with `disks` open read-write and connects to its QMP socket. */
  static async start(disks: DaemonDisk[]): Promise<StorageDaemon> {
    const dir = await Deno.makeTempDir({ prefix: "novactl-qsd-" });
    const sock = join(dir, "qmp.sock");
    const args = disks.flatMap((d) => [
      "--blockdev",
      JSON.stringify({
        "node-name": d.node,
        driver: "qcow2",
        file: { driver: "file", filename: d.path },
      }),
    ]);
    const child = new Deno.Command("qemu-storage-daemon", {
      args: [
        ...args,
        "--chardev",
        `socket,id=qmp,path=${sock},server=on,wait=off`,
        "--monitor",
        "chardev=qmp",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let stderr = "";
    const errText = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        stderr = (stderr + chunk).slice(-4096);
      }
    })();
    try {
      const qmp = await QmpClient.connect(sock, {
        timeoutMs: 10_000,
        retryUntil: Date.now() + 10_000,
      });
      void errText;
      return new StorageDaemon(qmp, child, dir);
    } catch (err) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
      await errText.catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      const why = stderr.trim().split("\n").pop() || (err as Error).message;
      throw new NovaError("internal", `qemu-storage-daemon did not start: ${why}`);
    }
  }

  /** Quits (storing persistent bitmaps), or kills the daemon after 10 s. */
  async stop(): Promise<void> {
    await quit(this.qmp, 5_000).catch(() => {});
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await this.child.status;
    clearTimeout(timer);
    this.qmp.close();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
