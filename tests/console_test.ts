/**
 * Interactive consoles (issue 13, item 4) on a two-node cluster with the test guest under TCG
 * on n2, reached through n1 (which relays every WebSocket to the VM's host). The guest runs a
 * shell on its serial port; commands typed here print an answer that differs from what was
 * typed (`echo $((6*7))-X` answers `42-X`), so the tty's echo of the input cannot pass for it.
 *
 * - an operator's WebSocket through n1 gets the log's tail first, then types (text and binary
 *   frames) and sees the guest's answers; `vm console` (the log) still shows them;
 * - `vm console --attach` with piped input prints the guest's answer and exits 0;
 * - the VNC WebSocket (noVNC's `binary` subprotocol) starts with the RFB greeting, and its
 *   framebuffer is the guest's VGA screen (the VM has a display device);
 * - refused before the upgrade: no or a bad token 401, a viewer 403 (serial or VNC, as the
 *   log: what guests print is not for viewers), an unknown VM
 *   404, a stopped VM 409;
 * - after n2 restarts and re-adopts the running QEMU, the console attaches again.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli, eventually, step } from "./support/api.ts";
import { fetchConsole, guestImportArgs, scriptUserData, testGuest } from "../bench/lib/guest.ts";
import { clusterCaFile, clusterHttpClient } from "../bench/lib/tls.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/** A shell on the serial port, and a mark once it reads it. */
const SHELL = `sh -c 'echo NV-SHELL-READY; exec sh' </dev/ttyS0 >/dev/ttyS0 2>&1
`;

/** A console WebSocket and everything it received, as text. */
class ConsoleClient {
  text = "";
  bytes = new Uint8Array();
  closed: Promise<CloseEvent>;
  opened: Promise<boolean>;

  constructor(readonly ws: WebSocket) {
    ws.binaryType = "arraybuffer";
    const dec = new TextDecoder();
    ws.onmessage = (e) => {
      const chunk = typeof e.data === "string"
        ? new TextEncoder().encode(e.data)
        : new Uint8Array(e.data as ArrayBuffer);
      const all = new Uint8Array(this.bytes.length + chunk.length);
      all.set(this.bytes);
      all.set(chunk, this.bytes.length);
      this.bytes = all;
      this.text += dec.decode(chunk, { stream: true });
    };
    this.closed = new Promise((resolve) => ws.addEventListener("close", resolve));
    this.opened = Promise.race([
      new Promise<boolean>((resolve) => ws.addEventListener("open", () => resolve(true))),
      this.closed.then(() => false),
    ]);
  }

  static async open(
    url: string,
    opts: { token?: string; query?: boolean; protocols?: string[] } = {},
  ): Promise<ConsoleClient> {
    const u = new URL(url.replace(/^http/, "ws"));
    const headers: Record<string, string> = {};
    if (opts.token && opts.query) u.searchParams.set("token", opts.token);
    else if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const client = clusterHttpClient();
    const c = new ConsoleClient(
      new WebSocket(u, { headers, protocols: opts.protocols, ...(client ? { client } : {}) }),
    );
    assert(await c.opened, `WebSocket ${u.pathname} did not open`);
    return c;
  }

  until(what: string, re: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> {
    return eventually(what, () => Promise.resolve(re.exec(this.text) ?? undefined), timeoutMs);
  }

  async close(): Promise<void> {
    this.ws.close();
    await this.closed;
  }
}

/**
 * The status a node answers a WebSocket handshake with (a WebSocket client hides it): a raw
 * HTTP/1.1 request over TLS trusting the cluster CA.
 */
async function handshakeStatus(url: string, headers: Record<string, string> = {}) {
  const u = new URL(url);
  const ca = clusterCaFile();
  const conn = u.protocol === "https:"
    ? await Deno.connectTls({
      hostname: u.hostname,
      port: Number(u.port),
      caCerts: ca ? [await Deno.readTextFile(ca)] : undefined,
    })
    : await Deno.connect({ hostname: u.hostname, port: Number(u.port) });
  try {
    const lines = [
      `GET ${u.pathname}${u.search} HTTP/1.1`,
      `host: ${u.host}`,
      "connection: Upgrade",
      "upgrade: websocket",
      "sec-websocket-version: 13",
      `sec-websocket-key: ${btoa("0123456789abcdef")}`,
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ];
    await conn.write(new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"));
    const buf = new Uint8Array(4096);
    let text = "";
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0);
  } finally {
    conn.close();
  }
}

testWithTimeout({
  name: "console: serial and VNC over WebSockets through another node; roles; --attach",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const cluster = new NovactlCluster({ env: { NOVACTL_ACCEL: "tcg" } });
  /** Where clients connect: n1, not the VM's host. */
  const url = () => cluster.nodes[0].url;
  const host = () => cluster.nodes[1];
  const serialUrl = (vm = "c1") => `${url()}/api/v1/vms/${vm}/console/ws`;
  const vncUrl = (vm = "c1") => `${url()}/api/v1/vms/${vm}/vnc/ws`;
  const ok = async (...args: string[]) => {
    const r = await cli([...args, "--server", url(), "--token", cluster.adminToken]);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const tokens = { viewer: "", operator: "" };
  const open: ConsoleClient[] = [];
  const attach = async (opts: Parameters<typeof ConsoleClient.open>[1]) => {
    const c = await ConsoleClient.open(serialUrl(), opts);
    open.push(c);
    return c;
  };

  try {
    await step(t, "a running guest with a shell on its serial port, on n2", async () => {
      await cluster.start(2, { voters: 1 });
      await ok(...guestImportArgs(guest, "guest"));
      for (const role of ["viewer", "operator"] as const) {
        const out = await ok("token", "create", `t-${role}`, "--role", role);
        tokens[role] = out.trim().split("\n").at(-1)!;
      }
      const dir = await Deno.makeTempDir();
      try {
        await Deno.writeTextFile(`${dir}/ud.yaml`, scriptUserData(SHELL));
        await ok(
          ...["vm", "create", "c1", "--image", "guest", "--memory", "128M", "--disk-size", "1"],
          ...["--node", host().name, "--user-data", `${dir}/ud.yaml`, "--wait"],
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      await eventually(
        "the guest's shell",
        async () => /NV-SHELL-READY/.test(await fetchConsole(url(), cluster.adminToken, "c1")),
        180_000,
      );
    });

    await step(t, "an operator types through n1 and sees the guest's answers", async () => {
      const op = await attach({ token: tokens.operator, query: true });
      await op.until("the log's tail first", /NV-SHELL-READY/);
      op.ws.send("echo $((6*7))-NV-TEXT\n");
      await op.until("the answer to a text frame", /42-NV-TEXT/);
      op.ws.send(new TextEncoder().encode("echo $((5*5))-NV-BINARY\n"));
      await op.until("the answer to a binary frame", /25-NV-BINARY/);
      const log = await fetchConsole(url(), cluster.adminToken, "c1");
      assert(/42-NV-TEXT/.test(log) && /25-NV-BINARY/.test(log), "vm console (the log) too");
    });

    await step(t, "vm console --attach with piped input prints the guest's answer", async () => {
      const main = new URL("../main.ts", import.meta.url).pathname;
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", main, "vm", "console", "c1", "--attach", "--server", url()],
        env: { NO_COLOR: "1", NOVACTL_TOKEN: tokens.operator, NOVACTL_CA: clusterCaFile() ?? "" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(2 * MINUTE),
      }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("echo $((6*8))-NV-CLI\n"));
      let out = "";
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      while (!/48-NV-CLI/.test(out)) {
        const r = await reader.read();
        if (r.done) break;
        out += r.value;
      }
      assert(/48-NV-CLI/.test(out), `--attach printed: ${out.slice(-500)}`);
      await writer.close();
      reader.releaseLock();
      await child.stdout.cancel().catch(() => {});
      const status = await child.status;
      const stderr = await new Response(child.stderr).text();
      assertEquals(status.code, 0, stderr);
    });

    await step(t, "the VNC WebSocket relays QEMU's RFB greeting", async () => {
      const vnc = new ConsoleClient(
        new WebSocket(vncUrl().replace(/^http/, "ws"), {
          headers: { authorization: `Bearer ${tokens.operator}` },
          protocols: ["binary"],
          client: clusterHttpClient(),
        }),
      );
      open.push(vnc);
      assert(await vnc.opened, "the VNC WebSocket opened");
      assertEquals(vnc.ws.protocol, "binary");
      await eventually("the RFB greeting", () => Promise.resolve(vnc.bytes.length >= 12));
      assertEquals(new TextDecoder().decode(vnc.bytes.subarray(0, 12)), "RFB 003.008\n");
      // The handshake through to ServerInit: the framebuffer is the guest's VGA text screen
      // (720x400), not QEMU's 640x480 "no graphic display device" placeholder.
      vnc.ws.send(new TextEncoder().encode("RFB 003.008\n"));
      await eventually("security types", () => Promise.resolve(vnc.bytes.length >= 14));
      assertEquals([...vnc.bytes.subarray(12, 14)], [1, 1], "one security type: none");
      vnc.ws.send(new Uint8Array([1]));
      await eventually("the security result", () => Promise.resolve(vnc.bytes.length >= 18));
      vnc.ws.send(new Uint8Array([1])); // ClientInit, shared
      await eventually("ServerInit", () => Promise.resolve(vnc.bytes.length >= 22));
      const init = new DataView(vnc.bytes.buffer, 18);
      assertEquals({ width: init.getUint16(0), height: init.getUint16(2) }, {
        width: 720,
        height: 400,
      });
    });

    await step(t, "refused before the upgrade: 401, 403, 404", async () => {
      assertEquals(await handshakeStatus(serialUrl()), 401, "no token");
      assertEquals(await handshakeStatus(`${serialUrl()}?token=bogus`), 401, "a bad token");
      assertEquals(
        await handshakeStatus(serialUrl(), { authorization: "Bearer bogus" }),
        401,
        "a bad header token",
      );
      assertEquals(await handshakeStatus(vncUrl()), 401, "VNC without a token");
      assertEquals(
        await handshakeStatus(`${vncUrl()}?token=${tokens.viewer}`),
        403,
        "a viewer on VNC",
      );
      // What the guest prints is no more a viewer's live than in its log (GET .../console).
      assertEquals(
        await handshakeStatus(`${serialUrl()}?token=${tokens.viewer}`),
        403,
        "a viewer on the serial console",
      );
      assertEquals(
        await handshakeStatus(`${serialUrl("nope")}?token=${tokens.operator}`),
        404,
        "an unknown VM",
      );
    });

    await step(
      t,
      "after n2 restarts and re-adopts its QEMU, the console attaches again",
      async () => {
        for (const c of open.splice(0)) await c.close();
        await cluster.restart(host().name);
        const op = await eventually("a console after the restart", async () => {
          const c = new ConsoleClient(
            new WebSocket(serialUrl().replace(/^http/, "ws"), {
              headers: { authorization: `Bearer ${tokens.operator}` },
              client: clusterHttpClient(),
            }),
          );
          if (await c.opened) return c;
        }, 60_000);
        open.push(op);
        op.ws.send("echo $((9*9))-NV-ADOPTED\n");
        await op.until("the answer after re-adoption", /81-NV-ADOPTED/);
      },
    );

    await step(t, "a stopped VM: 409", async () => {
      for (const c of open.splice(0)) await c.close();
      await ok("vm", "stop", "c1", "--force", "--wait");
      assertEquals(await handshakeStatus(`${serialUrl()}?token=${tokens.operator}`), 409);
      assertEquals(await handshakeStatus(`${vncUrl()}?token=${tokens.operator}`), 409);
      const r = await cli([
        "vm",
        "console",
        "c1",
        "--attach",
        "--server",
        url(),
        "--token",
        tokens.operator,
      ]);
      assertEquals(r.code, 1, r.stderr);
      assert(/not running/.test(r.stderr), r.stderr);
    });
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    for (const c of open) c.ws.close();
    await cluster.stop();
  }
});
