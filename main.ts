/** novactl: one program for the cluster node and its CLI. */

if (import.meta.main) {
  // The fencing watchdog runs beside every node for as long as its HA VMs do: it loads only its
  // own module, not the whole CLI (about 40 MB resident instead of 70).
  const { isWatchdogInvocation, watchdogMain } = await import("./host/fencing/entry.ts");
  if (isWatchdogInvocation(Deno.args)) Deno.exit(await watchdogMain(Deno.args));
  const { runCli } = await import("./cmd/main.ts");
  const code = await runCli(Deno.args);
  (await import("./core/log/mod.ts")).flushLogs();
  Deno.exit(code);
}
