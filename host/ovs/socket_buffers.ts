/**
 * Receive buffers for OVS's userspace datapath.
 *
 * On the netdev datapath `ovs-vswitchd` reads every packet of a system port
 * (the underlay interface under `br-phy`) from an `AF_PACKET` socket that it
 * opens with the kernel's default receive buffer, `net.core.rmem_default`
 * (208 KiB: about a hundred full-size frames), and never enlarges. A live
 * migration's memory stream arrives faster than that for a few milliseconds
 * whenever the daemon is not scheduled, and the socket then drops frames:
 * measured here, 17,000–22,000 of one migration's segments per migration,
 * each dropped at the destination's packet socket and resent by the source.
 * When the lost frame is the tail of a short exchange (the stream's last
 * bytes, the Raft commit, the destination's resume call), TCP waits its 200 ms
 * minimum retransmission timeout, and the guest stays paused that long.
 *
 * So a node on the userspace datapath raises the default before it starts
 * the daemon; it is only ever raised, never lowered. Other network namespaces
 * read the machine's value and cannot write it (seen on Linux 6.18), so hosts
 * run as namespaces of one machine (tests) need it raised for the machine.
 *
 * @module
 */
import { log } from "../../core/log/mod.ts";

/** What vswitchd's packet sockets get: room for about 2 ms of a 10 Gbit/s stream. */
export const OVS_RECEIVE_BUFFER_BYTES = 4 * 2 ** 20;

const RMEM_DEFAULT = "/proc/sys/net/core/rmem_default";

/**
 * Raises `net.core.rmem_default` to at least `bytes`. Returns the value in force
 * afterwards; null when it cannot be read or written (logged: OVS then runs with the
 * kernel's default and may drop frames under load).
 */
export async function ensureReceiveBufferDefault(
  bytes = OVS_RECEIVE_BUFFER_BYTES,
  path = RMEM_DEFAULT,
): Promise<number | null> {
  try {
    const current = Number((await Deno.readTextFile(path)).trim());
    if (current >= bytes) return current;
    await Deno.writeTextFile(path, `${bytes}\n`);
    log.info("raised the default socket receive buffer for OVS's userspace datapath", {
      sysctl: "net.core.rmem_default",
      from: current,
      to: bytes,
    });
    return bytes;
  } catch (err) {
    log.warn("cannot raise net.core.rmem_default; OVS may drop frames under load", {
      error: String(err),
    });
    return null;
  }
}
