/**
 * A node's fencing, kept available: the attached watchdog, noticed at once
 * when it dies (its HA QEMUs died with it), and replaced by a new one.
 */
import { log } from "../../core/log/mod.ts";
import type { FencedSpawner } from "../kvm/qemu.ts";
import { WatchdogClient } from "./client.ts";

const WATCH_EVERY_MS = 100;
const REATTACH_EVERY_MS = 1_000;

export class HostFencing implements FencedSpawner {
  private client: WatchdogClient | null;
  private readonly lostListeners: (() => void)[] = [];
  private timer: ReturnType<typeof setInterval> | null = null;
  private reattaching = false;
  private closed = false;

  private constructor(private readonly dataDir: string, client: WatchdogClient) {
    this.client = client;
  }

  /** Attaches to this host's watchdog (starting one if none runs) and watches it. */
  static async start(dataDir: string): Promise<HostFencing> {
    const fencing = new HostFencing(dataDir, await WatchdogClient.attach(dataDir));
    fencing.timer = setInterval(() => fencing.watch(), WATCH_EVERY_MS);
    return fencing;
  }

  /** The deadline the running watchdog already had (CLOCK_BOOTTIME ms): a restarted node's lease. */
  inheritedFenceAt(): number {
    return this.client?.hello.fenceAt ?? 0;
  }

  /** Runs `listener` each time the watchdog is lost. */
  onLost(listener: () => void): void {
    this.lostListeners.push(listener);
  }

  alive(): boolean {
    return this.client?.alive() ?? false;
  }

  async feed(fenceAt: number): Promise<void> {
    if (!this.client) throw new Error("no fencing watchdog attached");
    await this.client.feed(fenceAt);
  }

  async spawn(name: string, argv: string[], logPath: string, pidfile: string): Promise<number> {
    if (!this.client) throw new Error("no fencing watchdog attached");
    return await this.client.spawn(name, argv, logPath, pidfile);
  }

  /** Detaches; the watchdog keeps fencing on its own. */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.client?.close();
  }

  private watch(): void {
    if (this.closed) return;
    if (this.client && !this.client.alive()) {
      log.warn("fencing watchdog died; its HA VMs died with it", { pid: this.client.pid });
      this.client.close();
      this.client = null;
      for (const l of this.lostListeners) l();
    }
    if (!this.client) void this.reattach();
  }

  private async reattach(): Promise<void> {
    if (this.reattaching) return;
    this.reattaching = true;
    try {
      const client = await WatchdogClient.attach(this.dataDir);
      if (this.closed) client.close();
      else this.client = client;
    } catch (err) {
      log.warn("cannot start the fencing watchdog", { error: String(err) });
      await new Promise((r) => setTimeout(r, REATTACH_EVERY_MS));
    } finally {
      this.reattaching = false;
    }
  }
}
