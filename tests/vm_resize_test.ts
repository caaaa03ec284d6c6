/**
 * Growing a running VM's root disk (issue 12: resize while running with QMP `block_resize`),
 * on a one-node cluster with the test guest under TCG. The guest prints the size of
 * `/sys/block/vda` once a second:
 *
 * - `vm resize --disk-size` on the running VM is recorded at once, and the guest sees its root
 *   disk grow without a restart;
 * - changing CPUs or memory of the running VM is still refused, and so is shrinking the disk;
 * - after a stop and a start the disk keeps its new size.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli, eventually, step } from "./support/api.ts";
import { fetchConsole, guestImportArgs, scriptUserData, testGuest } from "../bench/lib/guest.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

const GiB = 2 ** 30;

/** The guest's side: once a second, `NV-VDA BOOT_ID SECTORS`. */
const WATCHER = `b=$(cat /proc/sys/kernel/random/boot_id)
while :; do
  echo "NV-VDA $b $(cat /sys/block/vda/size)"
  sleep 1
done
`;

/** The guest's last `NV-VDA` line: its boot and root disk size in bytes (null: none yet). */
function guestRoot(consoleText: string): { boot: string; bytes: number } | null {
  const last = [...consoleText.matchAll(/NV-VDA (\S+) (\d+)/g)].at(-1);
  return last ? { boot: last[1], bytes: Number(last[2]) * 512 } : null;
}

testWithTimeout({
  name: "vm resize: the root disk grows while the VM runs (block_resize), the guest sees it",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  const cluster = new NovactlCluster({ env: { NOVACTL_ACCEL: "tcg" } });
  const run = (...args: string[]) =>
    cli([...args, "--server", cluster.nodes[0].url, "--token", cluster.adminToken]);
  const ok = async (...args: string[]) => {
    const r = await run(...args);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const refused = async (pattern: RegExp, ...args: string[]) => {
    const r = await run(...args);
    assert(r.code !== 0, `${args.join(" ")} should fail: ${r.stdout}`);
    assert(pattern.test(r.stderr), `${args.join(" ")}: ${r.stderr}`);
  };
  const rootOf = async () =>
    (JSON.parse(await ok("vm", "show", "r1", "-o", "json")) as {
      disks: { id: string; sizeBytes: number }[];
    }).disks.find((d) => d.id === "root")!.sizeBytes;
  const consoleText = () => fetchConsole(cluster.nodes[0].url, cluster.adminToken, "r1");
  const seen = async () => guestRoot(await consoleText());
  let firstBoot = "";

  try {
    await step(t, "a running guest that reports its root disk's size", async () => {
      await cluster.start(1);
      await ok(...guestImportArgs(guest, "guest"));
      const dir = await Deno.makeTempDir();
      try {
        await Deno.writeTextFile(`${dir}/ud.yaml`, scriptUserData(WATCHER));
        await ok(
          ...["vm", "create", "r1", "--image", "guest", "--memory", "128M", "--disk-size", "1"],
          ...["--user-data", `${dir}/ud.yaml`, "--wait"],
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      const first = await eventually(
        "the guest reports vda",
        async () => await seen() ?? undefined,
        180_000,
      );
      assertEquals(first.bytes, 1 * GiB);
      firstBoot = first.boot;
    });

    await step(t, "vm resize --disk-size on the running VM: the guest sees it grow", async () => {
      await ok("vm", "resize", "r1", "--disk-size", "3");
      assertEquals(await rootOf(), 3 * GiB, "recorded at once");
      await eventually(
        "the guest sees its root disk grown",
        async () => (await seen())?.bytes === 3 * GiB || undefined,
        60_000,
      );
    });

    await step(t, "CPUs, memory and shrinking are refused while it runs", async () => {
      await refused(
        /must be stopped to change its CPUs or memory/,
        "vm",
        "resize",
        "r1",
        "--cpus",
        "2",
      );
      await refused(/cannot shrink the root disk/, "vm", "resize", "r1", "--disk-size", "2");
      assertEquals(await rootOf(), 3 * GiB);
    });

    await step(t, "a stop and a start keep the new size", async () => {
      await ok("vm", "stop", "r1", "--wait");
      await ok("vm", "start", "r1", "--wait");
      const again = await eventually("the restarted guest reports vda", async () => {
        const r = await seen();
        return r && r.boot !== firstBoot ? r : undefined;
      }, 180_000).catch(async (err) => {
        throw new Error(`${err.message}; console ends: ${(await consoleText()).slice(-1500)}`);
      });
      assertEquals(again.bytes, 3 * GiB);
    });
  } finally {
    await cluster.stop();
  }
});
