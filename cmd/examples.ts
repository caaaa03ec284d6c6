/**
 * An "Examples:" section for every command's `--help`: written out below for the commands people
 * reach for first, and otherwise made from the command's own arguments and required options, so
 * that a new command has one without anyone remembering to add it.
 *
 * @module
 */
import type { Command } from "commander";

/** Examples by command path (`vm create`), written for people. */
const EXAMPLES: Record<string, string[]> = {
  "": [
    "novactl vm list",
    "novactl --context prod -o json vm show web",
    "novactl vm list --server https://10.0.0.5:7070 --ca ca.crt -o wide",
  ],
  "node start": [
    "novactl node start --config /etc/novactl/node.yaml",
    "novactl node start --name n1 --data-dir /var/lib/novactl --listen 0.0.0.0:7070",
    "novactl node start --name n2 --data-dir /var/lib/novactl --listen 0.0.0.0:7070 \\\n" +
    "    --join https://10.0.0.1:7070 --token-file join.token",
  ],
  "node list": ["novactl node list -o wide", "novactl node list -q"],
  "node drain": ["novactl node drain n2"],
  "cluster status": ["novactl cluster status", "novactl cluster status -o json"],
  "cluster token create": ["novactl cluster token create --ttl 30m"],
  "image import": [
    "novactl image import tiny --kernel vmlinuz --initrd initrd.img --cmdline 'console=ttyS0'",
    "novactl image import debian --disk debian-12.qcow2",
  ],
  "image list": ["novactl image list -o name"],
  "vm create": [
    "novactl vm create web --image debian --cpus 2 --memory 1.5G --label tier=front",
    "novactl vm create db --image debian --memory 2G --disk-size 20G --ha --restart-policy always",
    "novactl vm create web2 --image debian --nic net1,ip=10.0.0.10 --wait --timeout 5m",
  ],
  "vm list": [
    "novactl vm list",
    "novactl vm list --node n1 --state running -l tier=front",
    "novactl vm list -o name",
    "novactl vm list --limit 50 -o json",
  ],
  "vm show": ["novactl vm show web", "novactl vm show web -o yaml"],
  "vm start": ["novactl vm start web --wait --timeout 2m"],
  "vm stop": ["novactl vm stop web", "novactl vm stop web --force --wait"],
  "vm wait": [
    "novactl vm wait web --for state=running --timeout 5m",
    "novactl vm wait web --for delete",
  ],
  "vm migrate": ["novactl vm migrate web --to n2", "novactl vm migrate web --abort"],
  "vm console": ["novactl vm console web --follow"],
  "vm resize": ["novactl vm resize web --cpus 4 --memory 4G"],
  "vm snapshot create": ["novactl vm snapshot create web before-upgrade --memory"],
  "vm snapshot restore": ["novactl vm snapshot restore web before-upgrade"],
  "volume create": ["novactl volume create data1 --pool dir --size 10G"],
  "network create": [
    "novactl network create net1 --type overlay --subnet 10.0.0.0/24",
    "novactl network create lan --type vlan --vlan 42 --subnet 192.168.42.0/24 --no-dhcp",
  ],
  "token create": ["novactl token create ci --role operator --ttl 30d"],
  "context add": [
    "novactl context add prod --server https://10.0.0.1:7070 --token-file prod.token --ca prod-ca.crt",
    "novactl context add lab --server http://127.0.0.1:7070 --token-file lab.token --use",
  ],
  "context use": ["novactl context use prod"],
  "context list": ["novactl context list"],
  "version": ["novactl version", "novactl version -o json", "novactl version --client"],
  "completion": [
    "source <(novactl completion bash)",
    'novactl completion zsh > "${fpath[1]}/_novactl"',
    "novactl completion fish > ~/.config/fish/completions/novactl.fish",
  ],
  "events": ["novactl events --type vm --resource web"],
};

/** Placeholder values for an argument or option value, by its name. */
const SAMPLE: Record<string, string> = {
  vm: "web",
  source: "web",
  snapshot: "before-upgrade",
  volume: "data1",
  network: "net1",
  nic: "net1",
  router: "r1",
  sg: "web-sg",
  ip: "192.0.2.10",
  id: "ID",
  "rule-id": "RULE_ID",
  file: "FILE",
  key: "scheduler.strategy",
  value: "pack",
  version: "3",
  "vm[:nic]": "web",
  dir: "/var/lib/novactl",
  "data-dir": "/var/lib/novactl",
  path: "/srv/backups",
};

/** What `<name>` stands for under each parent command. */
const NAME_BY_PARENT: Record<string, string> = {
  node: "n1",
  cluster: "n2",
  image: "debian",
  vm: "web",
  group: "front",
  network: "net1",
  sg: "web-sg",
  router: "r1",
  pool: "fast",
  volume: "data1",
  target: "nas",
  rule: "high-cpu",
  token: "ci",
  context: "prod",
};

function pathOf(cmd: Command): string[] {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names;
}

/** A usage example made from the command's arguments and required options. */
export function generatedExample(cmd: Command): string {
  const path = pathOf(cmd);
  const parent = path.at(-2) ?? "";
  const args = cmd.registeredArguments.filter((a) => a.required).map((a) =>
    a.name() === "name" ? NAME_BY_PARENT[parent] ?? "NAME" : SAMPLE[a.name()] ?? a.name()
  );
  const opts = cmd.options.filter((o) => o.mandatory).map((o) => {
    const flag = o.long ?? o.short!;
    const value = o.argChoices?.[0] ?? SAMPLE[o.name()] ?? o.name().toUpperCase();
    return o.required || o.optional ? `${flag} ${value}` : flag;
  });
  return ["novactl", ...path, ...args, ...opts].join(" ");
}

/** The examples `--help` shows for a command. */
export function examplesOf(cmd: Command): string[] {
  const written = EXAMPLES[pathOf(cmd).join(" ")];
  if (written) return written;
  if (cmd.commands.length) {
    // A group: one example per subcommand would drown its help; show the first two.
    return cmd.commands.filter((c) => !(c as unknown as { _hidden: boolean })._hidden).slice(0, 2)
      .flatMap((c) => examplesOf(c).slice(0, 1));
  }
  return [generatedExample(cmd)];
}

/** Adds an "Examples:" section to the help of every command in the tree. */
export function addExamples(root: Command): void {
  const visit = (cmd: Command) => {
    const lines = examplesOf(cmd);
    if (lines.length) {
      cmd.addHelpText(
        "after",
        `\nExamples:\n${lines.map((l) => `  ${l}`).join("\n")}`,
      );
    }
    cmd.commands.forEach(visit);
  };
  visit(root);
}
