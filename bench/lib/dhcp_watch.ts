/**
 * When a guest got its DHCP lease, seen from its host: `tcpdump` in the host's
 * network namespace on every interface, catching the guest's DHCP requests and
 * the replies OVN's native DHCP (ovn-controller) sends on the guest's tap. A reply's time is the kernel's
 * capture timestamp of the frame handed to the tap, so it does not depend on
 * how fast this process reads. The guest's udhcpc applies the ACK as it reads
 * it; nothing the guest runs is changed or slowed to be observed.
 *
 * ```ts
 * const watch = await DhcpWatch.start(namespace);
 * const t0 = performance.timeOrigin + performance.now();
 * // ... boot a guest with MAC mac ...
 * const ackMs = (await watch.waitFor(mac, t0)) - t0;
 * const discoverMs = (await watch.waitFor(mac, t0, "DISCOVER")) - t0;
 * await watch.stop();
 * ```
 *
 * Needs tcpdump (scripts/setup.sh installs it).
 *
 * @module
 */

/** One DHCP message tcpdump printed: a client's (DISCOVER, REQUEST) or the server's reply. */
export interface DhcpMessage {
  /** Capture time, epoch ms (microsecond precision). */
  atMs: number;
  /** The client's MAC (`chaddr`), lower case. */
  mac: string;
  /** DHCP message type: OFFER, ACK, NAK, ... */
  type: string;
  /** `yiaddr`, when the reply gives one. */
  ip: string | null;
}

/**
 * The DHCP messages in `tcpdump -n -tt -v` output (a packet's first line starts with its epoch
 * timestamp; its decode follows on indented lines). Packets whose decode is cut short are left
 * out.
 */
export function parseDhcpMessages(text: string): DhcpMessage[] {
  const messages: DhcpMessage[] = [];
  const blocks = text.split(/\n(?=\d+\.\d+ )/);
  for (const block of blocks) {
    const at = /^(\d+)\.(\d+) /.exec(block);
    const mac = /Client-Ethernet-Address ([0-9a-fA-F:]{17})/.exec(block);
    const type = /DHCP-Message \(53\), length 1: (\w+)/.exec(block);
    if (!at || !mac || !type) continue;
    const ip = /Your-IP (\d+\.\d+\.\d+\.\d+)/.exec(block);
    const micros = at[2].padEnd(6, "0").slice(0, 6);
    messages.push({
      atMs: Number(at[1]) * 1000 + Number(micros) / 1000,
      mac: mac[1].toLowerCase(),
      type: type[1].toUpperCase(),
      ip: ip ? ip[1] : null,
    });
  }
  return messages;
}

/** Now, as epoch ms with sub-millisecond precision (tcpdump's clock). */
export function epochNowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** A tcpdump of DHCP messages in one network namespace, running until `stop`. */
export class DhcpWatch {
  #captured: { text: string };
  #child: Deno.ChildProcess;
  #done: Promise<unknown>;

  private constructor(
    captured: { text: string },
    child: Deno.ChildProcess,
    done: Promise<unknown>,
  ) {
    this.#captured = captured;
    this.#child = child;
    this.#done = done;
  }

  /** Starts tcpdump in `netns` and resolves once it captures. */
  static async start(netns: string): Promise<DhcpWatch> {
    const child = new Deno.Command("ip", {
      args: [
        ...["netns", "exec", netns, "tcpdump", "-i", "any", "-l", "-n", "-tt", "-v"],
        ...["--immediate-mode", "udp and (port 67 or port 68)"],
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let ready!: () => void;
    let failed!: (e: Error) => void;
    const listening = new Promise<void>((res, rej) => [ready, failed] = [res, rej]);
    const dec = new TextDecoder();
    const captured = { text: "" };
    const out = (async () => {
      for await (const chunk of child.stdout) captured.text += dec.decode(chunk, { stream: true });
    })();
    const err = (async () => {
      let text = "";
      for await (const chunk of child.stderr) {
        text += dec.decode(chunk, { stream: true });
        if (text.includes("listening on")) ready();
      }
      failed(new Error(`tcpdump in ${netns} ended: ${text.trim()}`));
    })();
    const watch = new DhcpWatch(captured, child, Promise.all([out, err, child.status]));
    const timer = setTimeout(() => failed(new Error(`tcpdump in ${netns}: not listening`)), 10_000);
    try {
      await listening;
    } catch (e) {
      await watch.stop();
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return watch;
  }

  /** tcpdump's output so far. */
  text(): string {
    return this.#captured.text;
  }

  /** Every DHCP message captured so far. */
  messages(): DhcpMessage[] {
    return parseDhcpMessages(this.#captured.text);
  }

  /**
   * The capture time (epoch ms) of the first message of `type` (ACK, DISCOVER, ...) to or from
   * `mac` at or after `sinceMs` (epoch ms); waits for it at most `timeoutMs`.
   */
  async waitFor(mac: string, sinceMs: number, type = "ACK", timeoutMs = 60_000): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    const want = mac.toLowerCase();
    for (;;) {
      const hit = this.messages().find((r) =>
        r.mac === want && r.type === type && r.atMs >= sinceMs
      );
      if (hit) return hit.atMs;
      if (performance.now() > deadline) {
        throw new Error(`no DHCP ${type} to ${mac} within ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.#done.catch(() => {});
  }
}
