/**
 * `novactl vm snapshot create|list|restore|delete`: a thin client of
 * /api/v1/vms/NAME/snapshots. Take, restore and delete are operations run by the VM's host:
 * the commands wait for them (progress on a TTY, `--timeout`) unless given `--no-wait`,
 * which prints the operation's id; a failed operation exits 1. Below cluster level 2 the
 * API runs them at once, as release 0.1.0 did, and answers when done: nothing to wait for.
 */
import { Command } from "commander";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withListLimit,
  withWaitOptions,
} from "./common.ts";
import { startOperation } from "./operation.ts";
import { printTable, render } from "./output.ts";

type WaitOpts = GlobalOpts & { wait: boolean; timeout: number };

const WAIT = { byDefault: true, timeoutSeconds: 600 };

function snapshotPath(vm: string, snap?: string): string {
  const base = `/api/v1/vms/${encodeURIComponent(vm)}/snapshots`;
  return snap === undefined ? base : `${base}/${encodeURIComponent(snap)}`;
}

export function snapshotCommand(): Command {
  const snap = new Command("snapshot").description("VM snapshots (disk-only or with memory)");
  withWaitOptions(
    snap.command("create").argument("<vm>").argument("<snapshot>").description("take a snapshot")
      .option("--memory", "include memory and device state (VM must be running)"),
    { ...WAIT, until: "the snapshot is taken" },
  ).action(async (vm: string, name: string, opts: WaitOpts & { memory?: boolean }) => {
    const client = clientOf(opts);
    await startOperation(
      client,
      opts,
      () => client.request<unknown>("POST", snapshotPath(vm), { name, memory: !!opts.memory }),
      () => console.log(`snapshot ${name} of ${vm} created`),
    );
  });
  withListLimit(snap.command("list").argument("<vm>").description("list snapshots"))
    .action(async (vm: string, opts: ListOpts) => {
      const r = await clientOf(opts).list(snapshotPath(vm), "snapshots", opts.limit);
      render(
        opts.output,
        r,
        () => printTable(r.snapshots, ["name", "memory", "vmState", "createdAt"]),
      );
    });
  withWaitOptions(
    snap.command("restore").argument("<vm>").argument("<snapshot>").description(
      "roll back to a snapshot",
    ),
    { ...WAIT, until: "the VM is restored" },
  ).action(async (vm: string, name: string, opts: WaitOpts) => {
    const client = clientOf(opts);
    await startOperation(
      client,
      opts,
      () => client.request<unknown>("POST", `${snapshotPath(vm, name)}/restore`),
      () => console.log(`${vm} restored to ${name}`),
    );
  });
  withWaitOptions(
    snap.command("delete").argument("<vm>").argument("<snapshot>").description("delete a snapshot"),
    { ...WAIT, until: "the snapshot is deleted" },
  ).action(async (vm: string, name: string, opts: WaitOpts) => {
    const client = clientOf(opts);
    await startOperation(
      client,
      opts,
      () => client.request<unknown>("DELETE", snapshotPath(vm, name)),
      () => console.log(`snapshot ${name} of ${vm} deleted`),
    );
  });
  return snap;
}
