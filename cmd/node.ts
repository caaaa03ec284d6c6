/** `novactl node ...`: run a cluster member, list and show hosts. */
import { Command, InvalidArgumentError } from "commander";
import { startNode } from "./node_start.ts";
import { simulateHosts } from "./simulate_hosts.ts";
import { NODE_CONFIG_ENV, readNodeConfig, withNodeConfig } from "./node_config.ts";
import type { SimulatedHardware } from "../host/mod.ts";
import { type CentralPorts, parseCentralPorts } from "../host/ovs/mod.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  positiveInt,
  withClientOptions,
  withListLimit,
  withWaitOptions,
} from "./common.ts";
import { type Operation, waitForOperation } from "./operation.ts";
import { printFields, printTable, render } from "./output.ts";
import { networkFields } from "./node_network.ts";
import { formatBytes } from "./pool.ts";
import { NovaError } from "../core/errors/mod.ts";
import { isLevel, type Level, LEVELS, setLogLevel } from "../core/log/mod.ts";

function collectLabel(value: string, previous: Record<string, string>): Record<string, string> {
  const m = /^([a-zA-Z0-9._/-]+)=(.*)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`"${value}" is not key=value`);
  return { ...previous, [m[1]]: m[2] };
}

/** The hardware a simulated host registers (`node start --simulated-host`, `node simulate-hosts`). */
function withSimulatedHardware(cmd: Command): Command {
  return cmd
    .option("--simulated-cpus <n>", "CPUs a simulated host registers", positiveInt, 64)
    .option("--simulated-memory <MiB>", "memory a simulated host registers", positiveInt, 262_144);
}

function simulatedHardwareOf(
  opts: { simulatedCpus: number; simulatedMemory: number },
): SimulatedHardware {
  return { cpus: opts.simulatedCpus, memoryMiB: opts.simulatedMemory };
}

function grpcPort(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > 65535) {
    throw new InvalidArgumentError(`"${value}" is not a port number (0-65535)`);
  }
  return n;
}

function onOff(value: string): boolean {
  if (value !== "on" && value !== "off") throw new InvalidArgumentError(`"${value}" is not on|off`);
  return value === "on";
}

function ovnPorts(value: string): CentralPorts {
  const ports = parseCentralPorts(value);
  if (!ports) throw new InvalidArgumentError(`"${value}" is not four ports NB,SB,NBRAFT,SBRAFT`);
  return ports;
}

function logLevel(value: string): Level {
  if (!isLevel(value)) {
    throw new InvalidArgumentError(`"${value}" is not one of ${LEVELS.join(", ")}`);
  }
  return value;
}

export function nodeCommand(): Command {
  const node = new Command("node").description("cluster members (hypervisor hosts)");

  withSimulatedHardware(
    node.command("start").description("run this host as a cluster node")
      .option(
        "--config <file>",
        `YAML file of these options, keyed by flag name (data-dir: DIR); flags override it (env ${NODE_CONFIG_ENV})`,
      )
      .option("--name <name>", "unique node name (required here or in the config file)")
      .option(
        "--data-dir <dir>",
        "where Raft log, state and identity live (required here or in the config file)",
      )
      .option("--listen <host:port>", "address to serve API and peer traffic on", "127.0.0.1:7070")
      .option(
        "--advertise <url>",
        "URL peers and clients use to reach this node (default https://LISTEN)",
      )
      .option("--join <url>", "URL of any member of the cluster to join")
      .option(
        "--token <token>",
        "join token (from `novactl cluster token create`; prefer --token-file: ps shows argv)",
      )
      .option("--token-file <file>", "file holding the join token (env NOVACTL_JOIN_TOKEN)")
      .option(
        "--restore <file>",
        "build a new one-node cluster from a `cluster backup` FILE (data dir without cluster state)",
      )
      .option(
        "--insecure-http",
        "serve plain HTTP instead of HTTPS (loopback listen addresses only; development)",
      )
      .option("--label <key=value>", "node label (repeatable)", collectLabel, {})
      .option(
        "--grpc-port <port>",
        "also serve the gRPC API (gRPC, gRPC-Web, Connect) on this port of the --listen host (0: any free port; default: off)",
        grpcPort,
      )
      .option(
        "--simulated-host",
        "SIMULATION for scale tests: report VMs placed here as running without QEMU",
      )
      .option(
        "--networking <on|off>",
        "run this host's Open vSwitch and OVN (off: VMs with --nic cannot run here)",
        onOff,
        true,
      )
      .option(
        "--tunnel-interface <iface>",
        "interface whose IPv4 address is the overlay tunnel endpoint (default: the advertised address)",
      )
      .option(
        "--ovn-ports <nb,sb,nbRaft,sbRaft>",
        "TCP ports of this voter's OVN central member",
        ovnPorts,
      )
      .option(
        "--log-level <level>",
        `least severe log lines written: ${LEVELS.join("|")} (env NOVACTL_LOG_LEVEL; default info)`,
        logLevel,
      ),
  )
    .action(async (flags: Record<string, unknown>, cmd: Command) => {
      const file = (flags.config as string | undefined) ?? Deno.env.get(NODE_CONFIG_ENV);
      // deno-lint-ignore no-explicit-any
      const opts: any = file ? withNodeConfig(cmd, flags, await readNodeConfig(file)) : flags;
      for (const [attr, flag] of [["name", "--name"], ["dataDir", "--data-dir"]]) {
        if (!opts[attr]) {
          throw new NovaError(
            "usage",
            `node start needs ${flag} (or ${flag.slice(2)}: in --config)`,
          );
        }
      }
      if (opts.logLevel) setLogLevel(opts.logLevel);
      await startNode({
        name: opts.name,
        dataDir: opts.dataDir,
        listen: opts.listen,
        advertise: opts.advertise,
        join: opts.join,
        token: opts.token,
        tokenFile: opts.tokenFile,
        restore: opts.restore,
        insecureHttp: opts.insecureHttp === true,
        label: opts.label,
        grpcPort: opts.grpcPort,
        simulatedHost: opts.simulatedHost === true ? simulatedHardwareOf(opts) : undefined,
        networking: opts.networking,
        tunnelInterface: opts.tunnelInterface,
        ovnPorts: opts.ovnPorts,
      });
    });

  withSimulatedHardware(
    node.command("simulate-hosts")
      .description(
        "SIMULATION for scale tests: run --count simulated hosts (no QEMU) as members, in one process",
      )
      .requiredOption("--count <n>", "how many simulated hosts", positiveInt)
      .requiredOption("--data-dir <dir>", "each host's data dir is DIR/NAME")
      .option("--name-prefix <prefix>", "hosts are named PREFIX1 … PREFIXn", "sim")
      .option(
        "--listen-host <host>",
        "address every host listens on (each its own port)",
        "127.0.0.1",
      )
      .option("--join <url>", "URL of any member of the cluster to join")
      .option("--token-file <file>", "join tokens, one per line, one per host that has not joined")
      .option("--insecure-http", "serve plain HTTP (loopback only; development)")
      .option("--parallel <n>", "hosts joining at the same time", positiveInt, 4),
  )
    .action(async (opts) => {
      await simulateHosts({
        count: opts.count,
        namePrefix: opts.namePrefix,
        dataDir: opts.dataDir,
        listenHost: opts.listenHost,
        join: opts.join,
        tokenFile: opts.tokenFile,
        insecureHttp: opts.insecureHttp === true,
        hardware: simulatedHardwareOf(opts),
        parallel: opts.parallel,
      });
    });

  withClientOptions(
    withListLimit(node.command("list").description("list nodes with their state and inventory")),
  ).action(async (opts: ListOpts) => {
    const r = await clientOf(opts).list("/api/v1/nodes", "nodes", opts.limit);
    render(opts.output, r, () =>
      printTable(
        r.nodes.map((n) => {
          const inv = (n.inventory ?? {}) as Record<string, unknown>;
          return {
            ...n,
            cpus: inv.cpus,
            memoryMiB: inv.memoryMiB,
            accel: inv.accel ?? "probing",
            ...networkFields(n),
          };
        }),
        ["name", "state", "role", "url", "cpus", "memoryMiB", "accel", "datapath", "tunnelIp"],
      ));
  });

  withClientOptions(node.command("show").argument("<name>").description("show one node"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown>>(
        `/api/v1/nodes/${encodeURIComponent(name)}`,
      );
      render(opts.output, r, () => printFields({ ...r, ...networkFields(r), ...poolFields(r) }));
    });

  withClientOptions(
    node.command("set").argument("<name>").description(
      "set a host's provider bridge mappings (vlan and flat networks leave through them)",
    )
      .option(
        "--bridge-mapping <physnet:bridge>",
        "map a provider network to an OVS bridge the host makes (repeatable; replaces all)",
        (v: string, prev: string[]) => [...prev, v],
        [],
      )
      .option("--clear-bridge-mappings", "map no provider network on this host"),
  ).action(
    async (
      name: string,
      opts: GlobalOpts & { bridgeMapping: string[]; clearBridgeMappings?: boolean },
    ) => {
      if (!opts.bridgeMapping.length && !opts.clearBridgeMappings) {
        throw new NovaError(
          "usage",
          "give --bridge-mapping PHYSNET:BRIDGE or --clear-bridge-mappings",
        );
      }
      const bridgeMappings: Record<string, string> = {};
      for (const m of opts.bridgeMapping) {
        const [physnet, bridge, ...rest] = m.split(":");
        if (!physnet || !bridge || rest.length) {
          throw new NovaError("usage", `--bridge-mapping "${m}" is not PHYSNET:BRIDGE`);
        }
        bridgeMappings[physnet] = bridge;
      }
      const r = await clientOf(opts).request(
        "PUT",
        `/api/v1/nodes/${encodeURIComponent(name)}/bridge-mappings`,
        { bridgeMappings },
      );
      render(opts.output, r, () => console.log(`${name}: bridge mappings set`));
    },
  );

  withClientOptions(
    node.command("meta").argument("<name>").argument("[changes...]").description(
      "set (key=value) or remove (key-) an operator's metadata on a host; none: print it " +
        "(needs cluster level 2: every member on novactl 0.2.0 or newer)",
    ),
  ).action(async (name: string, changes: string[], opts: GlobalOpts) => {
    const client = clientOf(opts);
    const path = `/api/v1/nodes/${encodeURIComponent(name)}`;
    const meta = { ...(await client.get<{ meta?: Record<string, string> }>(path)).meta };
    if (!changes.length) {
      render(opts.output, meta, () => printFields(meta));
      return;
    }
    for (const change of changes) {
      const eq = change.indexOf("=");
      if (eq > 0) meta[change.slice(0, eq)] = change.slice(eq + 1);
      else if (change.endsWith("-") && change.length > 1) delete meta[change.slice(0, -1)];
      else throw new NovaError("usage", `"${change}" is neither KEY=VALUE nor KEY-`);
    }
    const r = await client.request<{ meta: Record<string, string> }>("PUT", `${path}/meta`, {
      meta,
    });
    render(opts.output, r, () => printFields(r.meta));
  });

  for (const [verb, what] of [["cordon", "accept no new VMs"], ["uncordon", "accept VMs again"]]) {
    withClientOptions(node.command(verb).argument("<name>").description(what))
      .action(async (name: string, opts: GlobalOpts) => {
        const r = await clientOf(opts).request(
          "POST",
          `/api/v1/nodes/${encodeURIComponent(name)}/${verb}`,
        );
        render(opts.output, r, () => console.log(`${name}: ${verb}ed`));
      });
  }
  for (
    const [verb, what] of [
      ["drain", "live-migrate every VM away, then mark the node drained"],
      ["evacuate", "move every VM away; for a lost host, restart its shared-disk VMs elsewhere"],
    ]
  ) {
    withClientOptions(withWaitOptions(
      node.command(verb).argument("<name>").description(what),
      { byDefault: true, timeoutSeconds: 3600, until: "the host is empty" },
    )).action(async (name: string, opts: GlobalOpts & { wait: boolean; timeout: number }) => {
      const client = clientOf(opts);
      let op = await client.request<Operation>(
        "POST",
        `/api/v1/nodes/${encodeURIComponent(name)}/${verb}`,
      );
      if (opts.wait) op = await waitForOperation(client, op.id, opts.timeout);
      render(opts.output, op, () => console.log(`${verb} ${name}: ${op.state} (${op.id})`));
    });
  }

  return node;
}

/** A host's storage pools as `node show` prints them: `NAME FREE/TOTAL free` each. */
function poolFields(n: Record<string, unknown>): Record<string, string> {
  const pools = ((n.inventory ?? {}) as { pools?: Record<string, Record<string, number | string>> })
    .pools;
  if (!pools) return {};
  return {
    pools: Object.entries(pools).map(([name, u]) =>
      u.error
        ? `${name} (${u.error})`
        : `${name} ${formatBytes(Number(u.freeBytes))}/${formatBytes(Number(u.totalBytes))} free`
    ).join(", "),
  };
}
