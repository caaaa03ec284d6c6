/**
 * `--wait`/`--timeout` of `vm disk attach|detach` and `vm nic add|remove`: the call's own
 * `?wait=SECONDS` (api/routes/hotplug_wait.ts), so the answer comes once the VM's running
 * QEMU has the device (or let go of it), or the VM does not run. Still on its way at the
 * timeout: exit 1, as `vm start --wait`. The server holds a call at most 300 s, so a longer
 * `--timeout` is cut to that.
 */
import type { Command } from "commander";
import { NovaError } from "../core/errors/mod.ts";
import type { ApiClient } from "./client.ts";
import { withWaitOptions } from "./common.ts";

/** The longest the server holds a `?wait` call. */
const MAX_SERVER_WAIT_S = 300;

export interface PlugWaitOpts {
  wait: boolean;
  timeout: number;
}

/** `--wait`, `--no-wait` (the default) and `--timeout` on a hot-plug command. */
export function withPlugWait(cmd: Command, until: string): Command {
  return withWaitOptions(cmd, { byDefault: false, timeoutSeconds: 120, until });
}

/**
 * Sends a hot-plug call, with `?wait` when `--wait`; throws a timeout error (exit 1) when the
 * device is still on its way at the timeout. `what` names it in that message.
 */
export async function plugCall<T>(
  client: ApiClient,
  method: string,
  path: string,
  body: unknown,
  opts: PlugWaitOpts,
  label: { what: string },
): Promise<T> {
  if (!opts.wait) return await client.request<T>(method, path, body);
  const seconds = Math.max(0, Math.min(Math.ceil(opts.timeout), MAX_SERVER_WAIT_S));
  const r = await client.requestWithStatus<T>(method, `${path}?wait=${seconds}`, body);
  if (r.status === 202) {
    throw new NovaError(
      "timeout",
      `${label.what}: still being hot-plugged after ${seconds} s`,
      r.body,
    );
  }
  return r.body;
}
