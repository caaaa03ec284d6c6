/**
 * `novactl vm console NAME --attach`: the VM's serial console in this terminal, over the
 * API's WebSocket (api/routes/console.ts). On a terminal, stdin goes raw (every key,
 * Ctrl-C included, reaches the guest) until Ctrl-] detaches; the terminal is restored
 * however the session ends. With stdin not a terminal (a pipe), its bytes are sent as they
 * come, and at its end the output is still printed for {@link PIPE_LINGER_MS} before the
 * session closes (a piped command's answer comes after its last byte).
 *
 * @module
 */
import { NovaError } from "../core/errors/mod.ts";
import type { ApiClient } from "./client.ts";

/** Ctrl-]: telnet's and virsh's escape. */
const DETACH = 0x1d;

/** How long output is still printed after piped input ends. */
export const PIPE_LINGER_MS = 1_000;

/** Attaches this terminal to VM `name`'s serial console; resolves when the session is over. */
export async function attachConsole(client: ApiClient, vmPath: string, name: string) {
  // The handshake's failures carry no reason: ask first, for a clear error (401, 404, 409).
  const vm = await client.get<{ state: string }>(vmPath);
  if (vm.state !== "running") {
    throw new NovaError("conflict", `VM "${name}" is not running (state ${vm.state})`);
  }
  const ws = await client.webSocket(`${vmPath}/console/ws`);
  ws.binaryType = "arraybuffer";
  const closed = new Promise<CloseEvent>((resolve) => ws.addEventListener("close", resolve));
  const open = await Promise.race([
    new Promise<boolean>((resolve) => ws.addEventListener("open", () => resolve(true))),
    closed.then(() => false),
  ]);
  if (!open) {
    throw new NovaError("unavailable", `cannot open the serial console of ${name}`);
  }
  let writes = Promise.resolve();
  ws.onmessage = (e) => {
    const bytes = typeof e.data === "string"
      ? new TextEncoder().encode(e.data)
      : new Uint8Array(e.data as ArrayBuffer);
    writes = writes.then(() => writeAll(Deno.stdout, bytes)).catch(() => {});
  };
  const tty = Deno.stdin.isTerminal();
  if (tty) {
    console.error(`attached to ${name}'s serial console; Ctrl-] detaches`);
    Deno.stdin.setRaw(true);
  }
  try {
    const end = await Promise.race([
      sendInput(ws, tty).then(() => "input" as const),
      closed.then((e) => e),
    ]);
    if (end === "input") {
      if (!tty) await Promise.race([closed, new Promise((r) => setTimeout(r, PIPE_LINGER_MS))]);
      ws.close(1000);
    } else if (end.reason) {
      console.error(`\r\n[${end.reason}]`);
    }
  } finally {
    if (tty) Deno.stdin.setRaw(false);
  }
  await writes;
  if (tty) console.error(`\r\ndetached from ${name}`);
}

/** Sends stdin until it ends or (on a terminal) Ctrl-] is typed. */
async function sendInput(ws: WebSocket, tty: boolean): Promise<void> {
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await Deno.stdin.read(buf);
    if (n === null || ws.readyState !== WebSocket.OPEN) return;
    const chunk = buf.slice(0, n);
    const at = tty ? chunk.indexOf(DETACH) : -1;
    if (at >= 0) {
      if (at > 0) ws.send(chunk.subarray(0, at));
      return;
    }
    ws.send(chunk);
  }
}

async function writeAll(
  w: { write(p: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await w.write(bytes.subarray(off));
}
