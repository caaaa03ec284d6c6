/**
 * Shell completion: `novactl completion bash|zsh|fish` prints a script generated from the
 * commander tree (commands, subcommands, flags, enum values), so commands and flags complete
 * without starting the program; resource names (VMs, nodes, images, ...) come from the cluster
 * through the hidden `novactl __complete KIND`, with the flags typed so far (`--context`, ...).
 *
 * @module
 */
import { Argument, Command, type Option } from "commander";
import { type GlobalOpts, targetOfOpts } from "./common.ts";
import { ApiClient } from "./client.ts";
import { processTrustDeps } from "./trust.ts";
import { configPath, loadConfig } from "./contexts.ts";
import { namesOf } from "./output.ts";

/** Resource kinds `__complete` can list, and where the API lists them. */
export const RESOURCE_LISTS: Record<string, string> = {
  vms: "/api/v1/vms?limit=500",
  nodes: "/api/v1/nodes",
  images: "/api/v1/images",
  networks: "/api/v1/networks",
  pools: "/api/v1/pools",
  volumes: "/api/v1/volumes",
};

/** What a value completes to: `@files`, `@KIND` (names from `__complete`), words, or nothing. */
type Values = string;

/** One command of the tree, as the shell scripts need it. */
export interface CompletionNode {
  /** Space-separated path below the root ("" for the root). */
  path: string;
  subcommands: string[];
  /** Every flag spelling (`-o`, `--output`) this command takes besides the global ones. */
  flags: string[];
  /** Flags that take a value, with what the value completes to. */
  values: Record<string, Values>;
  /** What each positional argument completes to, in order. */
  args: Values[];
}

/** Resource kind of a `<name>` argument, by the command group it is under. */
const NAME_KIND: Record<string, string> = {
  vm: "@vms",
  image: "@images",
  node: "@nodes",
  cluster: "@nodes",
  network: "@networks",
  pool: "@pools",
  volume: "@volumes",
  context: "@contexts",
};
/** Kinds of other arguments, by name. */
const ARG_KIND: Record<string, string> = {
  vm: "@vms",
  source: "@vms",
  volume: "@volumes",
  network: "@networks",
  nic: "@networks",
};
/** Kinds of option values, by the option's attribute name. */
const OPTION_KIND: Record<string, string> = {
  node: "@nodes",
  to: "@nodes",
  image: "@images",
  fromTemplate: "@vms",
  pool: "@pools",
  nic: "@networks",
  context: "@contexts",
  dataDir: "@dirs",
};
/** Commands whose `<name>` is a new name, not an existing resource. */
const CREATES = new Set(["create", "import", "add", "pull", "clone"]);

function valuesOf(o: Option): Values {
  if (o.argChoices?.length) return o.argChoices.join(" ");
  const kind = OPTION_KIND[o.attributeName()];
  if (kind) return kind;
  return /<[^>]*file[^>]*>/.test(o.flags) || ["kernel", "initrd", "disk", "ca"].includes(o.name())
    ? "@files"
    : "";
}

function spellings(o: Option): string[] {
  return [o.short, o.long].filter((s): s is string => !!s);
}

/** The completion tree of a program: one node per visible command. */
export function completionTree(root: Command): CompletionNode[] {
  const nodes: CompletionNode[] = [];
  const visit = (cmd: Command, path: string[]) => {
    const visible = cmd.commands.filter((c) => !(c as unknown as { _hidden: boolean })._hidden);
    const own = cmd === root ? [] : cmd.options.filter((o) => !o.hidden);
    const values: Record<string, Values> = {};
    for (const o of own) {
      if (o.required || o.optional) { for (const s of spellings(o)) values[s] = valuesOf(o); }
    }
    const parent = path.at(-2) ?? "";
    const leaf = path.at(-1) ?? "";
    nodes.push({
      path: path.join(" "),
      subcommands: visible.flatMap((c) => [c.name(), ...c.aliases()]),
      flags: [...own.flatMap(spellings), "--help"],
      values,
      args: cmd.registeredArguments.map((a, i) =>
        a.name() === "name"
          ? (CREATES.has(leaf) && i === cmd.registeredArguments.length - 1
            ? ""
            : NAME_KIND[parent] ?? "")
          : ARG_KIND[a.name()] ?? (a.argChoices?.join(" ") ?? "")
      ),
    });
    for (const c of visible) visit(c, [...path, c.name()]);
  };
  visit(root, []);
  return nodes;
}

/** The root's own (global) flags and their values. */
function globalsOf(root: Command): { flags: string[]; values: Record<string, Values> } {
  const values: Record<string, Values> = {};
  const opts = root.options.filter((o) => !o.hidden);
  for (const o of opts) {
    if (o.required || o.optional) { for (const s of spellings(o)) values[s] = valuesOf(o); }
  }
  return { flags: [...opts.flatMap(spellings), "--help"], values };
}

/** Quotes a word for bash, zsh and fish alike (single quotes, no escapes inside). */
function q(s: string): string {
  return `'${s.replaceAll("'", `'"'"'`)}'`;
}

/** Flags whose values the scripts pass on to `__complete` (which cluster to ask). */
const PASSED_ON = ["--server", "--token", "--ca", "--context"];

function tables(root: Command, assoc: (name: string, entries: [string, string][]) => string) {
  // Keys start with the program's name: bash refuses an empty key for the root.
  const tree = completionTree(root).map((n) => ({
    ...n,
    path: `novactl${n.path && ` ${n.path}`}`,
  }));
  const g = globalsOf(root);
  const subs: [string, string][] = tree.map((n) => [n.path, n.subcommands.join(" ")]);
  const flags: [string, string][] = tree.map((n) => [n.path, n.flags.join(" ")]);
  const values: [string, string][] = [
    ...Object.entries(g.values).map(([f, v]) => [`|${f}`, v] as [string, string]),
    ...tree.flatMap((n) =>
      Object.entries(n.values).map(([f, v]) => [`${n.path}|${f}`, v] as [string, string])
    ),
  ];
  const args: [string, string][] = tree.filter((n) => n.args.some(Boolean)).map((n) => [
    n.path,
    n.args.map((a) => a.replaceAll(" ", ",") || "-").join(" "),
  ]);
  return [
    assoc("__novactl_subs", subs),
    assoc("__novactl_flags", flags),
    assoc("__novactl_values", values),
    assoc("__novactl_args", args),
    `__novactl_global_flags=${q(g.flags.join(" "))}`,
  ].join("\n");
}

/** The bash script (`source <(novactl completion bash)`). */
export function bashCompletion(root: Command): string {
  const assoc = (name: string, entries: [string, string][]) =>
    `declare -gA ${name}=(\n${entries.map(([k, v]) => `  [${q(k)}]=${q(v)}`).join("\n")}\n)`;
  return `# bash completion for novactl, generated by \`novactl completion bash\`
${tables(root, assoc)}

# Words a value completes to: @files, @dirs, @KIND (asked of the cluster), or a list.
__novactl_words() {
  case "$1" in
    @files) compgen -f -- "$cur" ;;
    @dirs) compgen -d -- "$cur" ;;
    @*) compgen -W "$("\${COMP_WORDS[0]}" __complete "\${1#@}" "\${passed[@]}" 2>/dev/null)" -- "$cur" ;;
    *) compgen -W "\${1//,/ }" -- "$cur" ;;
  esac
}

# The value spec of a flag under a command path, if the flag takes a value.
__novactl_value_of() {
  local key="$1|$2"
  if [[ -n "\${__novactl_values[$key]+set}" ]]; then printf '%s' "\${__novactl_values[$key]}"; return 0; fi
  key="|$2"
  if [[ -n "\${__novactl_values[$key]+set}" ]]; then printf '%s' "\${__novactl_values[$key]}"; return 0; fi
  return 1
}

_novactl() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="" cpath="novactl" w i nargs=0 spec
  local -a passed=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    if [[ "$w" == -* ]]; then
      if [[ "$w" != *=* ]] && __novactl_value_of "$cpath" "$w" >/dev/null; then
        case "$w" in ${PASSED_ON.join("|")}) passed+=("$w" "\${COMP_WORDS[i+1]}") ;; esac
        if ((i + 1 == COMP_CWORD)); then prev="$w"; fi
        ((i++))
      fi
      continue
    fi
    if [[ " \${__novactl_subs[$cpath]} " == *" $w "* ]]; then
      cpath="$cpath $w"
      nargs=0
    else
      ((nargs++))
    fi
  done
  COMPREPLY=()
  if [[ -n "$prev" ]]; then
    spec="$(__novactl_value_of "$cpath" "$prev")"
    [[ -n "$spec" ]] && mapfile -t COMPREPLY < <(__novactl_words "$spec")
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "\${__novactl_flags[$cpath]} $__novactl_global_flags" -- "$cur")
    return 0
  fi
  if [[ -n "\${__novactl_subs[$cpath]}" ]]; then
    mapfile -t COMPREPLY < <(compgen -W "\${__novactl_subs[$cpath]}" -- "$cur")
    return 0
  fi
  local -a kinds=(\${__novactl_args[$cpath]})
  spec="\${kinds[nargs]}"
  [[ -n "$spec" && "$spec" != "-" ]] && mapfile -t COMPREPLY < <(__novactl_words "$spec")
  return 0
}
complete -o default -F _novactl novactl
`;
}

/** The zsh script (`novactl completion zsh > "\${fpath[1]}/_novactl"`, or `source <(...)`). */
export function zshCompletion(root: Command): string {
  const assoc = (name: string, entries: [string, string][]) =>
    `typeset -gA ${name}\n${name}=(\n${entries.map(([k, v]) => `  ${q(k)} ${q(v)}`).join("\n")}\n)`;
  return `#compdef novactl
# zsh completion for novactl, generated by \`novactl completion zsh\`
${tables(root, assoc)}

__novactl_value_of() {
  if (( \${+__novactl_values[$1|$2]} )); then print -r -- "\${__novactl_values[$1|$2]}"; return 0; fi
  if (( \${+__novactl_values[|$2]} )); then print -r -- "\${__novactl_values[|$2]}"; return 0; fi
  return 1
}

__novactl_words() {
  case "$1" in
    @files) _files ;;
    @dirs) _files -/ ;;
    @*) local -a names; names=(\${(f)"$(\${words[1]} __complete \${1#@} \${passed[@]} 2>/dev/null)"}); compadd -a names ;;
    *) local -a ws; ws=(\${=\${1//,/ }}); compadd -a ws ;;
  esac
}

_novactl() {
  local cur="\${words[CURRENT]}" prev="" cpath="novactl" w spec
  local -i i nargs=0
  local -a passed
  for (( i = 2; i < CURRENT; i++ )); do
    w="\${words[i]}"
    if [[ "$w" == -* ]]; then
      if [[ "$w" != *=* ]] && __novactl_value_of "$cpath" "$w" >/dev/null; then
        case "$w" in ${PASSED_ON.join("|")}) passed+=("$w" "\${words[i+1]}") ;; esac
        (( i + 1 == CURRENT )) && prev="$w"
        (( i++ ))
      fi
      continue
    fi
    if [[ " \${__novactl_subs[$cpath]} " == *" $w "* ]]; then
      cpath="$cpath $w"
      nargs=0
    else
      (( nargs++ ))
    fi
  done
  if [[ -n "$prev" ]]; then
    spec="$(__novactl_value_of "$cpath" "$prev")"
    [[ -n "$spec" ]] && __novactl_words "$spec"
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    local -a fl; fl=(\${=__novactl_flags[$cpath]} \${=__novactl_global_flags}); compadd -a fl
    return 0
  fi
  if [[ -n "\${__novactl_subs[$cpath]}" ]]; then
    local -a sc; sc=(\${=__novactl_subs[$cpath]}); compadd -a sc
    return 0
  fi
  local -a kinds; kinds=(\${=__novactl_args[$cpath]})
  spec="\${kinds[nargs+1]}"
  [[ -n "$spec" && "$spec" != "-" ]] && __novactl_words "$spec"
  return 0
}
if (( $+functions[compdef] )); then compdef _novactl novactl; fi
`;
}

/** The fish script (`novactl completion fish > ~/.config/fish/completions/novactl.fish`). */
export function fishCompletion(root: Command): string {
  const tree = completionTree(root);
  const g = globalsOf(root);
  const lines: string[] = [
    "# fish completion for novactl, generated by `novactl completion fish`",
    "function __novactl_subs",
    "    switch $argv[1]",
    ...tree.filter((n) => n.subcommands.length).flatMap((n) => [
      `        case ${q(n.path)}`,
      `            echo ${n.subcommands.join(" ")}`,
    ]),
    "    end",
    "end",
    "function __novactl_takes_value",
    "    switch $argv[2]",
    ...Object.keys(g.values).map((f) => `        case ${q(f)}\n            return 0`),
    "    end",
    '    switch "$argv[1]|$argv[2]"',
    ...tree.flatMap((n) =>
      Object.keys(n.values).map((f) => `        case ${q(`${n.path}|${f}`)}\n            return 0`)
    ),
    "    end",
    "    return 1",
    "end",
    "function __novactl_path",
    "    set -l cpath ''",
    "    set -l skip 0",
    "    for t in (commandline -opc)[2..-1]",
    "        if test $skip = 1",
    "            set skip 0",
    "            continue",
    "        end",
    "        if string match -q -- '-*' $t",
    "            if not string match -q -- '*=*' $t; and __novactl_takes_value \"$cpath\" $t",
    "                set skip 1",
    "            end",
    "            continue",
    "        end",
    "        if contains -- $t (string split ' ' -- (__novactl_subs \"$cpath\"))",
    '            set cpath (string trim -- "$cpath $t")',
    "        end",
    "    end",
    "    echo $cpath",
    "end",
    "function __novactl_at",
    '    test (__novactl_path) = "$argv[1]"',
    "end",
    "function __novactl_names",
    "    set -l passed",
    "    set -l toks (commandline -opc)",
    "    for i in (seq (count $toks))",
    `        if contains -- $toks[$i] ${PASSED_ON.join(" ")}; and test $i -lt (count $toks)`,
    "            set -a passed $toks[$i] $toks[(math $i + 1)]",
    "        end",
    "    end",
    "    novactl __complete $argv[1] $passed 2>/dev/null",
    "end",
    "complete -c novactl -f",
  ];
  const valueArgs = (v: Values) =>
    v === "@files"
      ? "-r -F"
      : v === "@dirs"
      ? "-r -a '(__fish_complete_directories)'"
      : v.startsWith("@")
      ? `-x -a ${q(`(__novactl_names ${v.slice(1)})`)}`
      : v
      ? `-x -a ${q(v.replaceAll(",", " "))}`
      : "-x";
  const flagSpec = (f: string) => f.startsWith("--") ? `-l ${f.slice(2)}` : `-s ${f.slice(1)}`;
  for (const f of g.flags.filter((f) => f !== "--help")) {
    const v = g.values[f];
    lines.push(`complete -c novactl ${flagSpec(f)}${v === undefined ? "" : ` ${valueArgs(v)}`}`);
  }
  for (const n of tree) {
    const cond = `-n ${q(`__novactl_at ${q(n.path)}`)}`;
    if (n.subcommands.length) {
      lines.push(`complete -c novactl ${cond} -a ${q(n.subcommands.join(" "))}`);
    }
    for (const f of n.flags.filter((f) => f !== "--help")) {
      const v = n.values[f];
      lines.push(
        `complete -c novactl ${cond} ${flagSpec(f)}${v === undefined ? "" : ` ${valueArgs(v)}`}`,
      );
    }
    const first = n.args[0];
    if (!n.subcommands.length && first) {
      lines.push(`complete -c novactl ${cond} ${valueArgs(first)}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** `novactl completion bash|zsh|fish`. */
export function completionCommand(root: Command): Command {
  const shells = { bash: bashCompletion, zsh: zshCompletion, fish: fishCompletion };
  return new Command("completion")
    .description("print a shell completion script (bash, zsh or fish)")
    .addArgument(new Argument("<shell>", "the shell to complete in").choices(Object.keys(shells)))
    .action((shell: keyof typeof shells) => console.log(shells[shell](root)));
}

/**
 * The hidden `novactl __complete KIND`: names of one kind, one per line, for the scripts above.
 * Quiet on any failure (an unreachable cluster completes nothing rather than printing errors
 * into the person's command line).
 */
export function completeCommand(): Command {
  return new Command("__complete")
    .description("names for shell completion (used by the completion scripts)")
    .argument("<kind>", [...Object.keys(RESOURCE_LISTS), "contexts"].join(" | "))
    .action(async (kind: string, opts: GlobalOpts) => {
      try {
        const names = kind === "contexts"
          ? loadConfig(configPath()).contexts.map((c) => c.name)
          : RESOURCE_LISTS[kind]
          ? namesOf(
            await Promise.race([quietClient(opts).get(RESOURCE_LISTS[kind]), giveUpAfter(3000)]),
          )
          : [];
        for (const n of names) console.log(n);
      } catch {
        // Completion must never break the command line being typed.
      }
    });
}

/** Rejects after `ms` without keeping the process alive (a slow cluster completes nothing). */
function giveUpAfter(ms: number): Promise<never> {
  return new Promise((_, reject) => {
    Deno.unrefTimer(setTimeout(() => reject(new Error("timeout")), ms));
  });
}

/** A client that never asks to trust a CA nor prints a notice: a Tab press is no place for it. */
function quietClient(opts: GlobalOpts): ApiClient {
  const t = targetOfOpts(opts);
  return new ApiClient({
    ...t,
    caFingerprint: opts.caFingerprint,
    trust: { ...processTrustDeps, interactive: () => false, notice: () => {} },
  });
}
