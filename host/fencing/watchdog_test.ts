/**
 * The fencing watchdog as a real process (`novactl host watchdog`), its
 * children real processes: it starts them only under a lease, kills them when
 * the lease runs out unfed, takes them along when it dies, and lets a new
 * node process re-attach. (QEMU under it: tests/ha_fencing_test.ts.)
 */
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { bootTimeMs } from "../../core/cluster/lease.ts";
import { processAlive } from "../kvm/qemu.ts";
import { WatchdogClient } from "./client.ts";
import { jailedCommand } from "./watchdog.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const COMMAND = [Deno.execPath(), "run", "-A", MAIN];

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "";
  } catch (err) {
    return (err as Error).message;
  }
}

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "watchdog: no lease no start; fences when unfed; re-attach; children die with it",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-wd-" });
  const log = `${dir}/child.log`;
  let watchdogPid = 0;
  try {
    const node = await WatchdogClient.attach(dir, COMMAND);
    watchdogPid = node.pid;
    assertEquals(node.hello.fenceAt, 0);
    assert(
      /holds no lease/.test(
        await refusal(node.spawn("v0", ["sleep", "600"], log, `${dir}/v0.pid`)),
      ),
    );

    // Fed for 1.5 s: a child starts, lives while the lease lasts, dies once it ran out.
    const fenceAt = bootTimeMs() + 1_500;
    await node.feed(fenceAt);
    const a = await node.spawn("a", ["sleep", "600"], log, `${dir}/a.pid`);
    assert(processAlive(a));
    // The pid is the program's own host pid (not its jail's, nor its pid in the namespace).
    assertEquals(Deno.readTextFileSync(`/proc/${a}/cmdline`), "sleep\x00600\x00");
    assertEquals(Deno.readTextFileSync(`${dir}/a.pid`), `${a}\n`);
    await until("a fenced", () => !processAlive(a));
    assert(bootTimeMs() >= fenceAt, "not killed before its lease ran out");

    // A node process that goes away and comes back finds the same watchdog and its children.
    await node.feed(bootTimeMs() + 60_000);
    const b = await node.spawn("b", ["sleep", "600"], log, `${dir}/b.pid`);
    node.close();
    const again = await WatchdogClient.attach(dir, COMMAND);
    assertEquals(again.pid, watchdogPid);
    assertEquals(again.hello.children, [{ name: "b", pid: b }]);
    assert(again.hello.fenceAt > bootTimeMs());

    // The watchdog dies: PR_SET_PDEATHSIG takes its children with it at once, lease or not.
    Deno.kill(watchdogPid, "SIGKILL");
    await until("b died with the watchdog", () => !processAlive(b));
    await until("client sees it gone", () => !again.alive());
    again.close();
  } finally {
    try {
      if (watchdogPid) Deno.kill(watchdogPid, "SIGKILL");
    } catch { /* gone */ }
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "watchdog: exits by itself once no node and no child is left",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-wd-" });
  try {
    const node = await WatchdogClient.attach(dir, COMMAND);
    const pid = node.pid;
    node.close();
    await until("watchdog gone", () => !processAlive(pid), 30_000);
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== "watchdog.log");
    assertEquals(left, [], "socket and pidfile removed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name:
    "jail: its program runs in a PID namespace, host pid in the pidfile; not without its watchdog",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-jail-" });
  const jail = (watchdogPid: number) => {
    const [cmd, ...args] = jailedCommand(["sleep", "600"], {
      logPath: `${dir}/log`,
      pidfile: `${dir}/pid`,
      watchdogPid,
    });
    return new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
  };
  let pid = 0;
  try {
    // Started on behalf of a watchdog that is not its grandparent (one that died before the
    // PDEATHSIGs were armed, so the jail was reparented): the program must not start.
    const orphan = jail(Deno.pid + 1_000_000);
    let started = false;
    await until("the orphaned jail exits or starts", () => {
      started = readOr(`${dir}/pid`) !== "";
      return started || !processAlive(orphan.pid);
    });
    if (started) orphan.kill("SIGKILL");
    assert(!started, "the program started without its watchdog");
    assertEquals((await orphan.status).code, 70);
    assert(/watchdog \d+ gone before QEMU started/.test(await Deno.readTextFile(`${dir}/log`)));

    // This process as the watchdog: the program runs, its host pid in the pidfile.
    const child = jail(Deno.pid);
    await until("pidfile written", () => /^\d+\n$/.test(readOr(`${dir}/pid`)));
    pid = Number(readOr(`${dir}/pid`));
    await until("sleep running", () => readOr(`/proc/${pid}/cmdline`) === "sleep\x00600\x00");
    const nspid = /^NSpid:\s+(.*)$/m.exec(readOr(`/proc/${pid}/status`))?.[1].split(/\s+/);
    assertEquals(nspid, [String(pid), "2"], "its own PID namespace, where its init is 1");
    // Killing the jail (what fencing does) takes the program along.
    child.kill("SIGKILL");
    await child.status;
    await until("sleep died with its jail", () => !processAlive(pid));
  } finally {
    try {
      if (pid) Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
    await Deno.remove(dir, { recursive: true });
  }
});

function readOr(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}
