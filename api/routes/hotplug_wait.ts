/**
 * `?wait=SECONDS` on hot-plug calls (`POST`/`DELETE` of /vms/:name/disks and /vms/:name/nics):
 * hold the answer until the VM's host reports the device in (or out of) its running QEMU
 * (core/fsm/vm_devices.ts), or the VM does not run; 200 then, 202 while still on its way.
 * Without `wait` the calls answer at once as they always did (201 for an add, 200 for a
 * removal). Below cluster level 2 hosts report nothing, and a wait answers at once (200).
 *
 * @module
 */
import type { Context } from "hono";
import { z } from "zod";
import { type ClusterNode, type PlugTarget, waitForPlug } from "../../core/cluster/mod.ts";

/** The query of a hot-plug call. */
export const plugQuery = z.object({
  wait: z.string().regex(/^\d+$/).optional().describe(
    "wait up to this many seconds (at most 300) until the VM's running QEMU has the device " +
      "(added) or no longer has it (removed), or the VM does not run: 200 then, 202 while " +
      "still on its way; absent: answer at once (201 for an add). Below cluster level 2 " +
      "hosts do not report plugged devices and the wait answers at once",
  ),
});

/**
 * The answer to a hot-plug call whose change is recorded: `body(now)` (the VM as the wait
 * left it; null: gone) with `status` without `wait`, else once settled 200, at the deadline
 * 202.
 */
export async function plugAnswer(
  c: Context,
  node: ClusterNode,
  vm: string,
  target: PlugTarget,
  present: boolean,
  wait: string | undefined,
  status: 200 | 201,
  body: (now: ReturnType<ClusterNode["fsm"]["vm"]>) => unknown,
): Promise<Response> {
  if (wait === undefined) return c.json(body(node.fsm.vm(vm)), status);
  const r = await waitForPlug(node, vm, target, present, {
    timeoutMs: Number(wait) * 1000,
    signal: c.req.raw.signal,
  });
  return c.json(body(r.vm), r.settled ? 200 : 202);
}
