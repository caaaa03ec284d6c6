import { assert, assertEquals } from "../../core/testing/assert.ts";
import { DaemonDir } from "./daemon_dir.ts";

Deno.test("ensureDaemon: a start refused because the dead daemon still holds its pid file waits for it, then starts", async () => {
  const root = await Deno.makeTempDir({ prefix: "novactl-daemon-" });
  // The dying daemon: still a process for a moment after its pid file's name left /proc.
  const dying = new Deno.Command("sleep", { args: ["0.5"] }).spawn();
  // The daemon binary: refuses as OVS daemons do while the old one lives, else "starts".
  const binary = `${root}/fake-daemon`;
  await Deno.writeTextFile(
    binary,
    `#!/bin/sh
if [ -d /proc/${dying.pid} ] && ! grep -q '^State:.*Z' /proc/${dying.pid}/status; then
  echo "fake: ${root}/run/fake.pid: already running as pid ${dying.pid}, aborting" >&2; exit 1
fi
echo started >> ${root}/starts
`,
  );
  await Deno.chmod(binary, 0o755);
  try {
    const dir = new DaemonDir(root);
    assert(await dir.ensureDaemon("fake", binary, []), "it had to start it");
    assertEquals((await Deno.readTextFile(`${root}/starts`)).trim(), "started");
  } finally {
    await dying.status;
    await Deno.remove(root, { recursive: true });
  }
});
