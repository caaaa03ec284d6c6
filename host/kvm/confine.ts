/**
 * How QEMU is confined on a host: it drops root for a dedicated system user (`-runas`, or
 * `-run-with user=` from QEMU 9.1, the only spelling QEMU 10 accepts) once it has opened the
 * VM's disks, console log and sockets, and runs under QEMU's seccomp filter (`-sandbox`). `scripts/setup.sh` creates the user; a node not running as root cannot switch
 * users and runs QEMU as itself (said once in the log).
 *
 * Why `elevateprivileges=deny` is left out with `-runas`: QEMU 7.2 installs the filter before it
 * drops root, so that option kills QEMU at its own `setuid` (measured: "Bad system call").
 * After `-runas` every uid of the process is the unprivileged user and its capability sets are
 * empty, so it cannot regain root anyway, and `spawn=deny` forbids exec'ing a setuid binary.
 * `spawn=deny` forbids `fork`, which `-daemonize` needs, so QEMU is not asked to daemonize:
 * the node starts it in a session of its own instead (host/kvm/qemu.ts).
 */
import { log } from "../../core/log/mod.ts";
import { atLeast, type QemuVersion } from "./qemu_version.ts";

/** The system user QEMU runs as (created by scripts/setup.sh). */
export const QEMU_USER = "novactl-qemu";

/**
 * QEMU's seccomp filter: no obsolete syscalls, no process creation, no resource control, and
 * no set*uid/set*gid unless QEMU must make that one `setuid` itself (`-runas`).
 */
export function sandbox(dropsToUser: boolean): string {
  return `on,obsolete=deny,elevateprivileges=${
    dropsToUser ? "allow" : "deny"
  },spawn=deny,resourcecontrol=deny`;
}

/** An unprivileged account to run QEMU as. */
export interface QemuUser {
  name: string;
  uid: number;
  gid: number;
}

let cached: Promise<QemuUser | null> | null = null;

/**
 * The user QEMU drops to: {@link QEMU_USER} (or `NOVACTL_QEMU_USER`) when this process is root
 * and the account exists; null otherwise (QEMU then keeps the node's own, unprivileged, user).
 */
export function qemuUser(): Promise<QemuUser | null> {
  cached ??= lookupQemuUser();
  return cached;
}

async function lookupQemuUser(): Promise<QemuUser | null> {
  const name = Deno.env.get("NOVACTL_QEMU_USER") ?? QEMU_USER;
  if (Deno.uid() !== 0) {
    log.info("not root: QEMU runs as the node's own user", { uid: Deno.uid() });
    return null;
  }
  const user = parsePasswd(await Deno.readTextFile("/etc/passwd").catch(() => ""), name);
  if (!user) {
    log.warn(
      `user ${name} does not exist (scripts/setup.sh creates it): QEMU runs as root, unconfined by user`,
    );
  }
  return user;
}

/** The entry for `name` in /etc/passwd text, or null. */
export function parsePasswd(text: string, name: string): QemuUser | null {
  for (const line of text.split("\n")) {
    const [user, , uid, gid] = line.split(":");
    if (user === name && uid !== undefined && gid !== undefined) {
      return { name, uid: Number(uid), gid: Number(gid) };
    }
  }
  return null;
}

/**
 * The option that makes QEMU drop to `user`: `-run-with user=` on QEMU 9.1 and newer (where
 * `-runas` became deprecated; 10.0 removed it), `-runas` before (7.2 has no `user=` there).
 */
export function runAsArgs(user: QemuUser, qemu: QemuVersion): string[] {
  return atLeast(qemu, 9, 1) ? ["-run-with", `user=${user.name}`] : ["-runas", user.name];
}

/**
 * QEMU arguments that confine it: a user to drop to when there is one ({@link runAsArgs},
 * spelled for release `qemu`), and `-sandbox`.
 *
 * HA VMs too: the kernel clears PR_SET_PDEATHSIG on `-runas`'s uid change (measured: such a QEMU
 * outlived a SIGKILLed watchdog), so the fencing watchdog does not rely on QEMU's own
 * PDEATHSIG but jails it in a PID namespace whose root init carries it (host/fencing/watchdog.ts).
 */
export function confinementArgs(user: QemuUser | null, qemu: QemuVersion): string[] {
  return [...(user ? runAsArgs(user, qemu) : []), "-sandbox", sandbox(user !== null)];
}
