/**
 * A throw-away etcd cluster on loopback, used as the consensus baseline.
 *
 * Talks to etcd only through its grpc-gateway JSON API (`/v3/...`, or
 * `/v3beta/...` on builds that lack the stable prefix).
 */

import { ManagedProcess, runToCompletion } from "./process.ts";
import { freePorts, LOOPBACK, requestJson, tailFile, WaitAborted, waitFor } from "./util.ts";

export interface EtcdMember {
  name: string;
  clientUrl: string;
  peerUrl: string;
  dataDir: string;
  logPath: string;
  process?: ManagedProcess;
}

export interface EtcdClusterOptions {
  /** Parent directory for data dirs and logs (created if missing). */
  baseDir: string;
  binary?: string;
  startTimeoutMs?: number;
}

interface StatusResponse {
  header?: { member_id?: string };
  leader?: string;
  version?: string;
}

const API_PREFIXES = ["/v3", "/v3beta"] as const;
export type EtcdApiPrefix = typeof API_PREFIXES[number];

export class EtcdCluster {
  readonly members: EtcdMember[] = [];
  apiPrefix: EtcdApiPrefix = "/v3";
  readonly #options: Required<EtcdClusterOptions>;

  constructor(options: EtcdClusterOptions) {
    this.#options = { binary: "etcd", startTimeoutMs: 30_000, ...options };
  }

  get clientUrls(): string[] {
    return this.members.map((member) => member.clientUrl);
  }

  get logPaths(): string[] {
    return this.members.map((member) => member.logPath);
  }

  /**
   * Starts `size` members at once (initial-cluster-state=new) and waits for a
   * healthy leader. On failure, stops the members and throws with log tails.
   */
  async start(size = 3): Promise<void> {
    await Deno.mkdir(this.#options.baseDir, { recursive: true });
    this.members.push(...this.#planMembers(size));
    const initialCluster = this.members.map((m) => `${m.name}=${m.peerUrl}`).join(",");
    for (const member of this.members) {
      member.process = await ManagedProcess.spawn({
        name: member.name,
        command: this.#options.binary,
        args: memberArgs(member, initialCluster),
        logPath: member.logPath,
      });
    }
    try {
      await this.#waitHealthy();
      this.apiPrefix = await this.#detectApiPrefix();
      await this.leaderUrl();
    } catch (error) {
      const logs = await this.describeLogs();
      await this.stop();
      throw new Error(`etcd cluster failed to start: ${(error as Error).message}\n${logs}`);
    }
  }

  /** Client URL of the current leader, found via maintenance/status on each member. */
  leaderUrl(): Promise<string> {
    return waitFor(() => this.#findLeaderOnce(), {
      timeoutMs: this.#options.startTimeoutMs,
      description: "an etcd leader",
    });
  }

  /** URL of a JSON gateway endpoint, e.g. `api(url, "kv/put")`. */
  api(clientUrl: string, path: string): string {
    return `${clientUrl}${this.apiPrefix}/${path}`;
  }

  async version(): Promise<string> {
    const stdout = await runToCompletion(this.#options.binary, ["--version"]);
    return stdout.match(/etcd Version:\s*(\S+)/)?.[1] ?? stdout.split("\n")[0];
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((member) => member.process?.stop()));
  }

  async describeLogs(): Promise<string> {
    const parts = await Promise.all(
      this.members.map(async (m) => `== ${m.name} log: ${m.logPath}\n${await tailFile(m.logPath)}`),
    );
    return parts.join("\n");
  }

  #planMembers(size: number): EtcdMember[] {
    const ports = freePorts(size * 2);
    return Array.from({ length: size }, (_, i) => {
      const name = `e${i + 1}`;
      return {
        name,
        clientUrl: `http://${LOOPBACK}:${ports[2 * i]}`,
        peerUrl: `http://${LOOPBACK}:${ports[2 * i + 1]}`,
        dataDir: `${this.#options.baseDir}/${name}`,
        logPath: `${this.#options.baseDir}/${name}.log`,
      };
    });
  }

  async #waitHealthy(): Promise<void> {
    await Promise.all(this.members.map((member) =>
      waitFor(async () => {
        this.#assertRunning(member);
        const { body } = await requestJson<{ health?: string }>(`${member.clientUrl}/health`);
        return body?.health === "true" ? true : undefined;
      }, { timeoutMs: this.#options.startTimeoutMs, description: `etcd ${member.name} /health` })
    ));
  }

  async #detectApiPrefix(): Promise<EtcdApiPrefix> {
    for (const prefix of API_PREFIXES) {
      const url = `${this.members[0].clientUrl}${prefix}/maintenance/status`;
      const { status } = await requestJson(url, { body: {} });
      if (status === 200) return prefix;
    }
    throw new Error(`etcd serves neither ${API_PREFIXES.join(" nor ")} gateway`);
  }

  async #findLeaderOnce(): Promise<string | undefined> {
    for (const member of this.members) {
      const status = await this.#status(member).catch(() => undefined);
      const memberId = status?.header?.member_id;
      if (memberId && status?.leader === memberId) return member.clientUrl;
    }
    return undefined;
  }

  async #status(member: EtcdMember): Promise<StatusResponse | null> {
    const { body } = await requestJson<StatusResponse>(
      this.api(member.clientUrl, "maintenance/status"),
      {
        body: {},
      },
    );
    return body;
  }

  #assertRunning(member: EtcdMember): void {
    if (member.process?.exited) throw new WaitAborted(`etcd ${member.name} exited early`);
  }
}

function memberArgs(member: EtcdMember, initialCluster: string): string[] {
  return [
    `--name=${member.name}`,
    `--data-dir=${member.dataDir}`,
    `--listen-client-urls=${member.clientUrl}`,
    `--advertise-client-urls=${member.clientUrl}`,
    `--listen-peer-urls=${member.peerUrl}`,
    `--initial-advertise-peer-urls=${member.peerUrl}`,
    `--initial-cluster=${initialCluster}`,
    "--initial-cluster-state=new",
    "--initial-cluster-token=raft-bench",
    "--logger=zap",
    "--log-outputs=stderr",
    "--log-level=warn",
  ];
}
