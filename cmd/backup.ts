/**
 * `novactl backup ...` and `novactl vm backup ...`: backup targets, backups,
 * verify, restore and schedules; thin clients of /api/v1/backup-targets,
 * /api/v1/backups and /api/v1/backup-schedules. Backups, verifies and restores
 * are operations: the commands wait for them (progress on a TTY) unless given
 * `--no-wait`.
 */
import { Command } from "commander";
import { nonNegativeInt } from "./parse.ts";
import { NovaError } from "../core/errors/mod.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
  withWaitOptions,
} from "./common.ts";
import { type Operation, waitForOperation } from "./operation.ts";
import { printFields, printTable, render } from "./output.ts";

const enc = encodeURIComponent;

interface BackupView {
  id: string;
  vm: string;
  target: string;
  kind: string;
  parent: string | null;
  createdAt: number;
  fullReason: string | null;
  disks: { id: string; fileBytes: number; copiedBytes: number; virtualBytes: number }[];
}

function backupRow(b: BackupView): Record<string, unknown> {
  return {
    id: b.id,
    vm: b.vm,
    kind: b.kind,
    parent: b.parent ?? "",
    target: b.target,
    created: new Date(b.createdAt).toISOString(),
    copied: mib(b.disks.reduce((n, d) => n + d.copiedBytes, 0)),
    stored: mib(b.disks.reduce((n, d) => n + d.fileBytes, 0)),
  };
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** `novactl vm backup create VM`: prints the backup's ID alone on the last stdout line. */
export function vmBackupCommand(): Command {
  const cmd = new Command("backup").description("back a VM up (full or incremental)");
  withClientOptions(withWaitOptions(
    cmd.command("create").argument("<vm>").description(
      "back the VM's disks up (running: live, fs-frozen when its agent answers; stopped: offline)",
    )
      .option("--target <name>", "backup target (default: its last backup's, or the only one)")
      .option("--incremental", "only the blocks changed since its last backup (else full)"),
    { byDefault: true, timeoutSeconds: 3600, until: "the backup is done" },
  )).action(
    async (
      vm: string,
      opts: GlobalOpts & { target?: string; incremental?: boolean; wait: boolean; timeout: number },
    ) => {
      const client = clientOf(opts);
      let op = await client.request<Operation>("POST", "/api/v1/backups", {
        vm,
        target: opts.target,
        incremental: !!opts.incremental,
      });
      if (!opts.wait) {
        return render(opts.output, op, () => console.log(`backup ${op.id} started`));
      }
      op = await waitForOperation(client, op.id, opts.timeout);
      const r = op.result ?? {};
      render(opts.output, op, () => {
        if (r.fullReason) console.error(String(r.fullReason));
        console.error(
          `${r.kind} backup of ${vm}: ${mib(Number(r.copiedBytes))} copied, ` +
            `${mib(Number(r.fileBytes))} stored in ${r.ms} ms` +
            (r.fsFrozen ? ` (filesystems frozen ${r.freezeMs} ms)` : ""),
        );
        console.log(String(r.backup));
      });
    },
  );
  withClientOptions(
    withListLimit(cmd.command("list").argument("<vm>").description("the VM's backups")),
  )
    .action(async (vm: string, opts: ListOpts) => {
      const r = await clientOf(opts).list<"backups", BackupView>(
        `/api/v1/backups?vm=${enc(vm)}`,
        "backups",
        opts.limit,
      );
      render(opts.output, r, () => printTable(r.backups.map(backupRow), COLUMNS));
    });
  return cmd;
}

const COLUMNS = ["id", "vm", "kind", "parent", "target", "created", "copied", "stored"];

/** `novactl backup ...`: targets, list, show, delete, verify, restore, schedules. */
export function backupCommand(): Command {
  const backup = new Command("backup").description(
    "backups: targets, list, verify, restore, schedules",
  );
  backup.addCommand(targetCommand());
  backup.addCommand(scheduleCommand());

  withClientOptions(withListLimit(
    backup.command("list").description("backups, oldest first").option("--vm <vm>", "of one VM"),
  )).action(async (opts: ListOpts & { vm?: string }) => {
    const q = opts.vm ? `?vm=${enc(opts.vm)}` : "";
    const r = await clientOf(opts).list<"backups", BackupView>(
      `/api/v1/backups${q}`,
      "backups",
      opts.limit,
    );
    render(opts.output, r, () => printTable(r.backups.map(backupRow), COLUMNS));
  });
  withClientOptions(backup.command("show").argument("<id>").description("one backup"))
    .action(async (id: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown>>(`/api/v1/backups/${enc(id)}`);
      render(opts.output, r, () => printFields(r));
    });
  withClientOptions(
    backup.command("delete").argument("<id>").description(
      "delete a backup (refused while other backups build on it)",
    ),
  ).action(async (id: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("DELETE", `/api/v1/backups/${enc(id)}`);
    render(opts.output, r, () => console.log(`backup ${id} deleted`));
  });
  withClientOptions(withWaitOptions(
    backup.command("verify").argument("<id>").description(
      "re-read every block and check its checksum (exit 1 when one fails)",
    ),
    { byDefault: true, timeoutSeconds: 3600, until: "the check is done" },
  )).action(async (id: string, opts: GlobalOpts & { wait: boolean; timeout: number }) => {
    const client = clientOf(opts);
    let op = await client.request<Operation>("POST", `/api/v1/backups/${enc(id)}/verify`);
    if (opts.wait) op = await waitForOperation(client, op.id, opts.timeout);
    render(opts.output, op, () => {
      if (!opts.wait) return console.log(`verify ${op.id} started`);
      const r = op.result ?? {};
      console.log(`backup ${id} verified: ${r.files} file(s), ${r.blocks} blocks, all match`);
    });
  });
  withClientOptions(withWaitOptions(
    backup.command("restore").argument("<id>").description(
      "restore a backup (with its chain) into a new VM, or in place into its stopped VM",
    )
      .option("--as <vm>", "create this new VM with the restored disks")
      .option("--in-place", "replace the disks of the (stopped) VM it was made of")
      .option("--node <node>", "host of the new VM (default: the scheduler's choice)")
      .option("--start", "start the new VM once restored"),
    { byDefault: true, timeoutSeconds: 3600, until: "the restore is done" },
  )).action(
    async (
      id: string,
      opts: GlobalOpts & {
        as?: string;
        inPlace?: boolean;
        node?: string;
        start?: boolean;
        wait: boolean;
        timeout: number;
      },
    ) => {
      if (!!opts.as === !!opts.inPlace) {
        throw new NovaError("usage", "give either --as NEWVM or --in-place");
      }
      const client = clientOf(opts);
      let op = await client.request<Operation>("POST", `/api/v1/backups/${enc(id)}/restore`, {
        ...(opts.as ? { as: opts.as } : { inPlace: true }),
        node: opts.node,
        start: !!opts.start,
      });
      if (opts.wait) op = await waitForOperation(client, op.id, opts.timeout);
      render(opts.output, op, () => {
        if (!opts.wait) return console.log(`restore ${op.id} started`);
        console.log(`backup ${id} restored into ${op.target}`);
      });
    },
  );
  return backup;
}

function targetCommand(): Command {
  const t = new Command("target").description("backup targets: directories every host can write");
  withClientOptions(
    t.command("create").argument("<name>").description("add a backup target")
      .requiredOption("--path <dir>", "directory mounted at this path on every host"),
  ).action(async (name: string, opts: GlobalOpts & { path: string }) => {
    const r = await clientOf(opts).request("POST", "/api/v1/backup-targets", {
      name,
      path: opts.path,
    });
    render(opts.output, r, () => console.log(`backup target ${name} created (${opts.path})`));
  });
  withClientOptions(withListLimit(t.command("list").description("backup targets")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list("/api/v1/backup-targets", "targets", opts.limit);
      render(opts.output, r, () => printTable(r.targets, ["name", "path", "by"]));
    });
  withClientOptions(
    t.command("delete").argument("<name>").description(
      "remove a target (refused while it holds backups)",
    ),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("DELETE", `/api/v1/backup-targets/${enc(name)}`);
    render(opts.output, r, () => console.log(`backup target ${name} deleted`));
  });
  return t;
}

function scheduleCommand(): Command {
  const s = new Command("schedule").description(
    "backup schedules with retention (run by the leader)",
  );
  withClientOptions(
    s.command("set").argument("<vm>").description("back the VM up on a cron schedule (UTC)")
      .requiredOption("--cron <expr>", 'five fields, e.g. "0 2 * * *"')
      .option("--target <name>", "backup target")
      .option("--keep-last <n>", "keep the newest N", nonNegativeInt, 0)
      .option("--keep-daily <n>", "keep the newest of each of the last N days", nonNegativeInt, 0)
      .option(
        "--keep-weekly <n>",
        "keep the newest of each of the last N weeks",
        nonNegativeInt,
        0,
      ),
  ).action(
    async (
      vm: string,
      opts: GlobalOpts & {
        cron: string;
        target?: string;
        keepLast: number;
        keepDaily: number;
        keepWeekly: number;
      },
    ) => {
      const r = await clientOf(opts).request("PUT", `/api/v1/backup-schedules/${enc(vm)}`, {
        cron: opts.cron,
        target: opts.target,
        keepLast: opts.keepLast,
        keepDaily: opts.keepDaily,
        keepWeekly: opts.keepWeekly,
      });
      render(opts.output, r, () => console.log(`backup schedule of ${vm} set (${opts.cron})`));
    },
  );
  withClientOptions(withListLimit(s.command("list").description("backup schedules")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list("/api/v1/backup-schedules", "schedules", opts.limit);
      render(
        opts.output,
        r,
        () =>
          printTable(r.schedules, ["vm", "cron", "target", "keepLast", "keepDaily", "keepWeekly"]),
      );
    });
  withClientOptions(s.command("show").argument("<vm>").description("one VM's schedule"))
    .action(async (vm: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown>>(
        `/api/v1/backup-schedules/${enc(vm)}`,
      );
      render(opts.output, r, () => printFields(r));
    });
  withClientOptions(s.command("delete").argument("<vm>").description("remove a VM's schedule"))
    .action(async (vm: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).request("DELETE", `/api/v1/backup-schedules/${enc(vm)}`);
      render(opts.output, r, () => console.log(`backup schedule of ${vm} deleted`));
    });
  return s;
}
