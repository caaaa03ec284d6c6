/**
 * The graphical console: QEMU's VNC server listens on a unix socket in the VM's run
 * directory (host/kvm/qemu.ts) and speaks RFB to each client that connects (it takes
 * several; noVNC asks for a shared session). The node connects once per viewer and relays.
 *
 * @module
 */

/**
 * A connection to the VNC server at `path`; QEMU sends the RFB greeting first.
 * @throws Deno.errors.NotFound or ConnectionRefused when no QEMU serves it
 */
export async function connectVnc(path: string): Promise<Deno.UnixConn> {
  return await Deno.connect({ transport: "unix", path });
}
