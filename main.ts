/** novactl: one program for the cluster node and its CLI. */
import { runCli } from "./cmd/main.ts";

if (import.meta.main) {
  const code = await runCli(Deno.args);
  Deno.exit(code);
}
