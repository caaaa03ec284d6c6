/**
 * The serial hub against a stand-in for QEMU's chardev (a unix socket server taking one
 * client): the log's tail comes first, output fans out to every attachment, input from all of
 * them arrives whole, the last to detach hangs up, and QEMU going away ends every attachment.
 */
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { type ConsoleSink, SerialConsoles } from "./serial.ts";

function recorder() {
  const sink = { text: "", ended: null as string | null };
  const dec = new TextDecoder();
  const s: ConsoleSink = {
    data: (b) => sink.text += dec.decode(b),
    end: (r) => sink.ended = r,
  };
  return { sink, s };
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

testWithTimeout({
  name: "serial hub: tail first, fan-out, merged input, hang-up after the last, end when QEMU goes",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir();
  const paths = { serial: `${dir}/serial.sock`, console: `${dir}/console.log` };
  await Deno.writeTextFile(paths.console, "x".repeat(20_000) + "BOOTED\n");
  const listener = Deno.listen({ transport: "unix", path: paths.serial });
  const accepted: Deno.UnixConn[] = [];
  let received = "";
  const serving = (async () => {
    for await (const conn of listener) {
      accepted.push(conn);
      (async () => {
        const buf = new Uint8Array(1024);
        for (;;) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) break;
          received += new TextDecoder().decode(buf.subarray(0, n));
        }
      })();
    }
  })();
  const consoles = new SerialConsoles();
  try {
    const a = recorder();
    const b = recorder();
    const one = await consoles.attach("v", paths, a.s);
    const two = await consoles.attach("v", paths, b.s);
    assert(a.sink.text.endsWith("BOOTED\n") && a.sink.text.length === 16 << 10, "the tail");
    await until("one connection", () => accepted.length === 1);
    await accepted[0].write(new TextEncoder().encode("login: "));
    await until("both see the output", () => b.sink.text.endsWith("login: "));
    assert(a.sink.text.endsWith("BOOTED\nlogin: "));
    await Promise.all([
      one.write(new TextEncoder().encode("first line\n")),
      two.write(new TextEncoder().encode("second line\n")),
    ]);
    await until("input arrives", () => received.length === 23);
    assertEquals(received, "first line\nsecond line\n");
    assertEquals(accepted.length, 1, "one connection for both");

    one.detach();
    two.detach();
    const closed = accepted[0].read(new Uint8Array(1)).catch(() => null);
    assertEquals(await closed, null, "the last detach hangs up");

    const c = recorder();
    await consoles.attach("v", paths, c.s);
    await until("a new connection", () => accepted.length === 2);
    accepted[1].close(); // QEMU exits
    await until("the attachment ends", () => c.sink.ended !== null);
    assert(/stopped or moved/.test(c.sink.ended!), c.sink.ended!);
  } finally {
    listener.close();
    await serving.catch(() => {});
    for (const conn of accepted) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
    await Deno.remove(dir, { recursive: true });
  }
});
