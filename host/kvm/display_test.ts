/**
 * The graphical console shows the guest: a VM launched with a display device draws its screen
 * on QEMU's VNC server (what the node relays to noVNC), where one without shows QEMU's
 * "no graphic display device" placeholder. Real QEMU, the real test guest, and a minimal RFB
 * client reading the framebuffer as noVNC would.
 */
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { testGuest } from "../../bench/lib/guest.ts";
import { type Display, QemuDriver, type QemuVm } from "./qemu.ts";
import { readConsole } from "./console.ts";

/** QEMU's placeholder surface for a console without a display device (ui/console.c). */
const PLACEHOLDER = { width: 640, height: 480 };
/** VGA text mode, 80x25 characters of 9x16 pixels: what the BIOS and the kernel's vgacon draw. */
const VGA_TEXT = { width: 720, height: 400 };

/** Reads exactly `n` bytes. */
async function readFull(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) throw new Error(`VNC closed after ${got} of ${n} bytes`);
    got += r;
  }
  return buf;
}

interface Frame {
  width: number;
  height: number;
  /** 32-bit pixels as QEMU's server format sends them (one u32 each). */
  pixels: Uint32Array;
}

/**
 * One full framebuffer from QEMU's VNC server at `path` (RFB 3.8, no auth, raw encoding, the
 * server's own 32-bit pixel format).
 */
async function vncFrame(path: string): Promise<Frame> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    assertEquals(new TextDecoder().decode(await readFull(conn, 12)), "RFB 003.008\n");
    await conn.write(new TextEncoder().encode("RFB 003.008\n"));
    const nTypes = (await readFull(conn, 1))[0];
    const types = [...await readFull(conn, nTypes)];
    assert(types.includes(1), `security "none" offered: ${types}`);
    await conn.write(new Uint8Array([1]));
    assertEquals(new DataView((await readFull(conn, 4)).buffer).getUint32(0), 0, "security ok");
    await conn.write(new Uint8Array([1])); // ClientInit, shared
    const init = new DataView((await readFull(conn, 24)).buffer);
    const width = init.getUint16(0);
    const height = init.getUint16(2);
    assertEquals(init.getUint8(4), 32, "32 bits per pixel");
    await readFull(conn, init.getUint32(20)); // the desktop name
    const req = new DataView(new ArrayBuffer(8 + 10));
    req.setUint8(0, 2); // SetEncodings: raw only
    req.setUint16(2, 1);
    req.setInt32(4, 0);
    req.setUint8(8, 3); // FramebufferUpdateRequest, not incremental, all of it
    req.setUint16(14, width);
    req.setUint16(16, height);
    await conn.write(new Uint8Array(req.buffer));
    const pixels = new Uint32Array(width * height);
    let covered = 0;
    while (covered < width * height) {
      const head = new DataView((await readFull(conn, 4)).buffer);
      assertEquals(head.getUint8(0), 0, "a FramebufferUpdate");
      for (let r = head.getUint16(2); r > 0; r--) {
        const rect = new DataView((await readFull(conn, 12)).buffer);
        const [x, y, w, h] = [0, 2, 4, 6].map((o) => rect.getUint16(o));
        assertEquals(rect.getInt32(8), 0, "raw encoding");
        const data = await readFull(conn, w * h * 4);
        const px = new Uint32Array(data.buffer);
        for (let row = 0; row < h; row++) {
          pixels.set(px.subarray(row * w, (row + 1) * w), (y + row) * width + x);
        }
        covered += w * h;
      }
    }
    return { width, height, pixels };
  } finally {
    conn.close();
  }
}

/** How many pixels differ from the most common value (the background). */
function drawnPixels(f: Frame): number {
  const counts = new Map<number, number>();
  for (const p of f.pixels) counts.set(p, (counts.get(p) ?? 0) + 1);
  return f.pixels.length - Math.max(...counts.values());
}

/**
 * The characters of VGA text memory (0xb8000, 32 KiB: the screen and vgacon's scrollback),
 * read through the monitor (QEMU runs as its own user and could not write a file of ours).
 */
async function vgaText(qemu: QemuVm): Promise<string> {
  const out = await qemu.qmp.execute<string>("human-monitor-command", {
    "command-line": "xp /16384hx 0xb8000",
  });
  // Each cell is a 16-bit word: the character in its low byte, attributes in the high one.
  return [...out.matchAll(/0x([0-9a-f]{4})/g)].map((m) =>
    String.fromCharCode(parseInt(m[1], 16) & 0xff)
  )
    .join("");
}

async function bootGuest(dir: string, display: Display | undefined): Promise<QemuVm> {
  const guest = await testGuest();
  const driver = await new QemuDriver(`${dir}/h`).init();
  const qemu = await driver.launch({
    name: "g",
    uuid: crypto.randomUUID(),
    cpus: 1,
    memoryMiB: 256,
    accel: "tcg",
    // tty0 as an extra console (ttyS0 stays /dev/console) at the default log level: the
    // kernel's messages are drawn on the screen too.
    kernel: {
      path: guest.kernel,
      initrd: guest.initrd,
      cmdline: "console=tty0 console=ttyS0 panic=-1 cryptomgr.notests",
    },
    disks: [],
    nics: [],
    generation: 0,
    consoles: true,
    ...(display ? { display } : {}),
  });
  await qemu.cont();
  for (let i = 0; i < 240; i++) {
    if (
      new TextDecoder().decode(await readConsole(qemu.paths.console, 1 << 20)).includes(
        "NOVACTL-GUEST-READY",
      )
    ) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  assert(
    new TextDecoder().decode(await readConsole(qemu.paths.console, 1 << 20)).includes(
      "NOVACTL-GUEST-READY",
    ),
    "the guest booted",
  );
  return qemu;
}

testWithTimeout({
  name:
    "display vga: the VNC framebuffer is the guest's text screen with its kernel console, and follows what it writes",
  timeoutMs: 4 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-display-" });
  const qemu = await bootGuest(dir, "vga");
  try {
    const booted = await vncFrame(qemu.paths.vnc);
    assertEquals({ width: booted.width, height: booted.height }, VGA_TEXT, "VGA text mode");
    assert(drawnPixels(booted) > 1_000, `text on screen (${drawnPixels(booted)} pixels)`);
    // The kernel's console (tty0) is what is drawn: its timestamped lines are in text memory.
    const text = await vgaText(qemu);
    assert(/\[\s*\d+\.\d{6}\] /.test(text), `kernel messages in VGA text memory: ${text}`);

    // The guest writes to its screen; the framebuffer changes and the text is there.
    const mark = `NOVACTL-SCREEN-${crypto.randomUUID().slice(0, 8)}`;
    const r = await qemu.agent.run("/bin/sh", ["-c", `printf '\\n${mark}\\n' >/dev/tty1`], 30_000);
    assertEquals(r.exitCode, 0, JSON.stringify(r));
    assert((await vgaText(qemu)).includes(mark), "the guest's line in VGA text memory");
    const after = await vncFrame(qemu.paths.vnc);
    assert(
      after.pixels.some((p, i) => p !== booted.pixels[i]),
      "the framebuffer changed with the guest's line",
    );
  } finally {
    await qemu.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  name: "no display (a QEMU launched before displays): VNC shows QEMU's placeholder, not the guest",
  timeoutMs: 4 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-nodisplay-" });
  const qemu = await bootGuest(dir, undefined);
  try {
    const frame = await vncFrame(qemu.paths.vnc);
    assertEquals({ width: frame.width, height: frame.height }, PLACEHOLDER);
  } finally {
    await qemu.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
