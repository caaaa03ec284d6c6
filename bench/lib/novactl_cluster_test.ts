/**
 * `qemuPidsIn` finds live QEMUs from pidfiles and refuses to answer "none" when it
 * could not really look: a missing data dir or an unreadable pidfile throws.
 */
import { assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { qemuPidsIn } from "./novactl_cluster.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

async function withDataDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "qemu-pids-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

testWithTimeout({
  name: "qemuPidsIn: live pidfiles count, missing or stale ones do not",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withDataDir(async (dir) => {
    assertEquals((await qemuPidsIn(dir)).size, 0, "no vms dir yet: nothing runs");
    await Deno.mkdir(`${dir}/vms/alive`, { recursive: true });
    await Deno.mkdir(`${dir}/vms/no-pidfile`);
    await Deno.mkdir(`${dir}/vms/exited`);
    await Deno.writeTextFile(`${dir}/vms/alive/qemu.pid`, `${Deno.pid}\n`);
    await Deno.writeTextFile(`${dir}/vms/exited/qemu.pid`, `${await exitedPid()}\n`);
    assertEquals([...(await qemuPidsIn(dir))], [["alive", Deno.pid]]);
  });
});

testWithTimeout({
  name: "qemuPidsIn: a data dir that is not there throws instead of reporting none",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withDataDir(async (dir) => {
    await assertRejects(() => qemuPidsIn(`${dir}/missing`), Deno.errors.NotFound);
  });
});

testWithTimeout({
  name: "qemuPidsIn: a pidfile it cannot read throws instead of reporting none",
  timeoutMs: 2 * MINUTE,
}, async () => {
  await withDataDir(async (dir) => {
    // A directory where the pidfile should be: reading it fails with EISDIR, not ENOENT.
    await Deno.mkdir(`${dir}/vms/vm1/qemu.pid`, { recursive: true });
    await assertRejects(() => qemuPidsIn(dir), /directory/i);
  });
});

testWithTimeout(
  { name: "qemuPidsIn: a pidfile holding no pid throws", timeoutMs: 2 * MINUTE },
  async () => {
    await withDataDir(async (dir) => {
      await Deno.mkdir(`${dir}/vms/vm1`, { recursive: true });
      await Deno.writeTextFile(`${dir}/vms/vm1/qemu.pid`, "garbage\n");
      await assertRejects(() => qemuPidsIn(dir), /holds no pid/);
    });
  },
);

async function exitedPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}
