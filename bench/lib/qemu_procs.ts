/**
 * The QEMU processes running one VM, found on the whole machine by the VM's uuid in
 * /proc/PID/cmdline (HA QEMUs are children of the fencing watchdog and may outlive any pidfile), with
 * the node whose data dir they belong to.
 */

export interface QemuCopy {
  /** Its pid on the host (an HA QEMU has another one inside its PID namespace). */
  pid: number;
  /** The real uid it runs as. */
  uid: number;
  /** The node name in the QEMU's paths (`…/n2/vms/…`), "?" when none is. */
  host: string;
}

/** Every live QEMU on this machine running the VM with `uuid`. */
export function qemusOf(uuid: string): Promise<QemuCopy[]> {
  return qemusMatching(`-uuid ${uuid}`);
}

/** Every live QEMU on this machine whose command line mentions `text` (e.g. a cluster's base dir). */
export async function qemusMatching(text: string): Promise<QemuCopy[]> {
  const out: QemuCopy[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let cmdline: string;
    let status: string;
    try {
      cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
      status = await Deno.readTextFile(`/proc/${e.name}/status`);
    } catch {
      continue; // exited while we looked
    }
    // QEMU itself, not the wrappers that start it with its argv (an HA QEMU's jail).
    const program = cmdline.slice(0, cmdline.indexOf("\0")).split("/").pop() ?? "";
    cmdline = cmdline.replaceAll("\0", " ");
    if (!program.startsWith("qemu-system") || !cmdline.includes(text)) continue;
    if (!isAlive(Number(e.name))) continue;
    out.push({
      pid: Number(e.name),
      uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1),
      host: /\/(n\d+)\/vms\//.exec(cmdline)?.[1] ?? "?",
    });
  }
  return out;
}

/** True while `pid` exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
