/**
 * An "upstream" network outside a lab's hosts, for provider (flat or vlan)
 * networks: one namespace with a Linux bridge holding the upstream host's
 * address, and a veth from it into each host's namespace (`ext0` there), which
 * the test then puts on the host's provider bridge (`br-ex`). What a router's
 * gateway port and floating IPs are reached from, as a data-centre uplink
 * would reach them:
 *
 * ```text
 *   nvlab-<run>-up: bridge brup (192.0.2.1/24) ── u1 ══ ext0 in host n2 (on br-ex)
 *                                              └─ u2 ══ ext0 in host n3 (on br-ex)
 * ```
 *
 * Named after the lab's run, so {@link NetworkLab.sweepStale} removes what a
 * crashed run left; {@link Upstream.destroy} removes it (and its veths, and
 * whatever runs in it) otherwise.
 *
 * @module
 */
import type { NetworkLab } from "./netns.ts";

const dec = new TextDecoder();

async function run(args: string[], check = true): Promise<{ ok: boolean; out: string }> {
  const out = await new Deno.Command(args[0], {
    args: args.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (check && !out.success) {
    throw new Error(`${args.join(" ")}: ${dec.decode(out.stderr).trim()}`);
  }
  return { ok: out.success, out: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

export class Upstream {
  #links = 0;
  #destroyed = false;

  private constructor(readonly namespace: string, readonly address: string) {}

  /** Creates the namespace and its bridge with `cidr` (`192.0.2.1/24`) on it. */
  static async create(lab: NetworkLab, cidr: string): Promise<Upstream> {
    const namespace = lab.hubNamespace.replace(/-hub$/, "-up");
    const up = new Upstream(namespace, cidr.split("/")[0]);
    try {
      await run(["ip", "netns", "add", namespace]);
      await run(["ip", "-n", namespace, "link", "set", "lo", "up"]);
      await run(["ip", "-n", namespace, "link", "add", "brup", "type", "bridge"]);
      await run(["ip", "-n", namespace, "addr", "add", cidr, "dev", "brup"]);
      await run(["ip", "-n", namespace, "link", "set", "brup", "up"]);
    } catch (err) {
      await up.destroy();
      throw err;
    }
    return up;
  }

  /**
   * A veth from the upstream bridge to `hostNamespace`, named `ext0` there (down until
   * it is put on a bridge). Transmit checksums are computed on both ends: the host end
   * feeds Open vSwitch's userspace datapath, which forwards unfinished checksums as
   * they are.
   */
  async connect(hostNamespace: string, name = "ext0"): Promise<void> {
    const port = `u${++this.#links}`;
    await run([
      ...["ip", "-n", this.namespace, "link", "add", port, "type", "veth"],
      ...["peer", "name", name, "netns", hostNamespace],
    ]);
    await run(["ip", "-n", this.namespace, "link", "set", port, "master", "brup", "up"]);
    await run(["ip", "netns", "exec", this.namespace, "ethtool", "-K", port, "tx", "off"]);
    await run(["ip", "netns", "exec", hostNamespace, "ethtool", "-K", name, "tx", "off"]);
    await run(["ip", "-n", hostNamespace, "link", "set", name, "up"]);
  }

  /** Runs `cmd` in the upstream namespace; its output (stdout, then stderr) and success. */
  exec(cmd: string[]): Promise<{ ok: boolean; out: string }> {
    return run(["ip", "netns", "exec", this.namespace, ...cmd], false);
  }

  /** Starts `cmd` in the upstream namespace in the background (killed by destroy). */
  spawn(cmd: string[]): Deno.ChildProcess {
    return new Deno.Command("ip", {
      args: ["netns", "exec", this.namespace, ...cmd],
      stdout: "null",
      stderr: "null",
    }).spawn();
  }

  /** Kills what runs in the namespace and deletes it (its veths go with it). Safe twice. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#destroyed = true;
    const pids = (await run(["ip", "netns", "pids", this.namespace], false)).out;
    for (const pid of pids.split("\n").map(Number).filter((p) => p > 0)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone already */ }
    }
    await run(["ip", "netns", "del", this.namespace], false);
  }
}
