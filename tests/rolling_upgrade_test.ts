/**
 * A rolling upgrade (issue 14): a 3-node cluster runs the previous release, v0.1.0, checked out
 * from this repository's git tag, with a real QEMU guest (TCG). Its nodes are upgraded to this
 * checkout one at a time, each stopped and started again on its own data dir, while the guest
 * keeps running:
 *
 * - with any member still on 0.1.0 the cluster stays at level 1, and a level-2 command
 *   (`node meta`) is refused with `feature_unavailable`, naming the members not upgraded;
 * - at level 1 VM snapshots run as 0.1.0 ran them, at once on the VM's host, whether an old
 *   leader forwards them to an upgraded host or an upgraded leader to an old one;
 * - once the last node runs 0.2.0 the leader raises the level (a `cluster.upgrade` entry) and
 *   the command works;
 * - the guest ran throughout: the same QEMU process, its counter still going, never rebooted;
 * - a program older than the data dir's level refuses it, naming both versions (0.1.0 has no
 *   such check, so this uses the clearly named test hook that makes this program pretend to be
 *   0.1.0: the promise future releases keep).
 *
 * Without git or the tag this test fails (it never skips): `git fetch --tags`.
 */
import { dirname } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, forgetOpenApiDocument, step } from "./support/api.ts";
import { bootIds, counters, fetchConsole, guestImportArgs, testGuest } from "../bench/lib/guest.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";
import { VERSION } from "../core/version.ts";
import { PRETEND_RELEASE_ENV } from "../core/upgrade/mod.ts";
import { clusterCaFile } from "../bench/lib/tls.ts";
import { atLeast, formatQemuVersion, qemuBinaryVersion } from "../host/kvm/qemu_version.ts";

/** The previous release, as tagged in this repository. */
const PREVIOUS = {
  tag: "v0.1.0",
  commit: "5eefceff870f8fadb23175aa69403474e6da375b",
  version: "0.1.0",
};

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      cwd: opts.cwd,
      env: opts.env,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      signal: AbortSignal.timeout(opts.timeoutMs ?? 120_000),
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(`${cmd} is not installed: the rolling-upgrade test needs it`);
    }
    throw err;
  }
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** Where scripts/setup.sh unpacks bookworm's QEMU 7.2 when the system's is newer. */
const PREVIOUS_QEMU_BIN = "/opt/novactl-test/qemu-bookworm/root/usr/bin";

/**
 * The environment of the nodes that run the previous release: 0.1.0 confines QEMU with
 * `-runas`, which QEMU 9.1 deprecated and QEMU 10 removed, so with a newer system QEMU they
 * run bookworm's 7.2, as hosts that upgrade novactl before QEMU do.
 */
async function previousReleaseEnv(): Promise<Record<string, string>> {
  const system = await qemuBinaryVersion();
  if (!atLeast(system, 9, 1)) return {};
  const ok = await Deno.stat(`${PREVIOUS_QEMU_BIN}/qemu-system-x86_64`).then(
    () => true,
    () => false,
  );
  if (!ok) {
    throw new Error(
      `${PREVIOUS.tag} cannot run QEMU ${formatQemuVersion(system)} (-runas) and ` +
        `${PREVIOUS_QEMU_BIN} has no QEMU: run scripts/setup.sh`,
    );
  }
  return { PATH: `${PREVIOUS_QEMU_BIN}:${Deno.env.get("PATH") ?? ""}` };
}

/** The previous release's tree in a temp dir (`git archive TAG`); returns its main.ts. */
async function checkOutPrevious(): Promise<{ dir: string; mainTs: string }> {
  const here = dirname(fromFileUrl(import.meta.url));
  const top = await run("git", ["-C", here, "rev-parse", "--show-toplevel"]);
  if (top.code !== 0) {
    throw new Error(`${here} is not in a git checkout: the test needs the tag ${PREVIOUS.tag}`);
  }
  const root = top.stdout.trim();
  const has = async (rev: string) =>
    (await run("git", ["-C", root, "rev-parse", "--verify", "--quiet", `${rev}^{commit}`]))
      .code === 0;
  // A clone made without tags still has the release's commit.
  const release = (await has(PREVIOUS.tag))
    ? PREVIOUS.tag
    : (await has(PREVIOUS.commit))
    ? PREVIOUS.commit
    : null;
  if (release === null) {
    throw new Error(
      `the previous release (tag ${PREVIOUS.tag}, commit ${PREVIOUS.commit}) is missing from ` +
        `${root}: git fetch --tags`,
    );
  }
  const dir = await Deno.makeTempDir({ prefix: `novactl-${PREVIOUS.tag}-` });
  const x = await run("bash", [
    "-c",
    'set -o pipefail; git -C "$1" archive --format=tar "$2" | tar -x -C "$3"',
    "-",
    root,
    release,
    dir,
  ]);
  if (x.code !== 0) throw new Error(`git archive ${PREVIOUS.tag} failed: ${x.stderr}`);
  const mainTs = `${dir}/main.ts`;
  const v = await run(Deno.execPath(), ["run", "-A", mainTs, "--version"], { cwd: dir });
  assertEquals(v.stdout.trim(), PREVIOUS.version, `${PREVIOUS.tag} --version: ${v.stderr}`);
  return { dir, mainTs };
}

interface Status {
  leader: string | null;
  level?: number;
  members: { name: string; role: string; version?: string | null }[];
}

interface ErrorBody {
  error: { code: string; message: string };
}

testWithTimeout({
  name: "rolling upgrade: v0.1.0 nodes upgraded one at a time while a VM runs; level 2 after",
  timeoutMs: 20 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const previous = await checkOutPrevious();
  const guest = await testGuest();
  const cluster = new NovactlCluster({
    env: { NOVACTL_ACCEL: "tcg" },
    programs: { n1: previous.mainTs, n2: previous.mainTs, n3: previous.mainTs },
    programEnv: { [previous.mainTs]: await previousReleaseEnv() },
  });
  const live = () => cluster.nodes.find((n) => n.process && !n.process.exited)!.url;
  const token = () => cluster.adminToken;
  const ok = async (...args: string[]) => {
    const r = await cli([...args, "--server", live(), "--token", token()]);
    assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const nodeUrl = (name: string) => cluster.node(name).url;
  let host = "";
  let qemuPid = 0;
  const guestCounters = async () =>
    counters(await fetchConsole(nodeUrl(host), token(), "keep", 1 << 16));

  /** Stops a node, then starts it again with this checkout's code on the same data dir. */
  const upgrade = async (name: string) => {
    await cluster.stopNode(name);
    cluster.setProgram(name, null);
    await cluster.restart(name);
    forgetOpenApiDocument(nodeUrl(name)); // its answers now fit the new program's document
    await cluster.waitForVoters(3, [name]);
    await eventually(`${name} reports ${VERSION}`, async () => {
      const r = await api<{ inventory: { version: string } | null }>(
        `${nodeUrl(name)}/api/v1/nodes/${name}`,
        { token: token() },
      );
      return r.body?.inventory?.version === VERSION || undefined;
    }, 60_000);
  };

  /** The leader is `name` (an upgraded node: 0.1.0 does not even route the new request). */
  const leadWith = (name: string) =>
    eventually(`${name} leads`, async () => {
      const s = (await api<Status>(`${nodeUrl(name)}/api/v1/cluster?local=true`, {
        token: token(),
      })).body;
      if (s.leader === name) return true;
      await api(`${nodeUrl(name)}/api/v1/cluster/transfer-leader`, {
        method: "POST",
        token: token(),
        body: { name },
      });
      return undefined;
    }, 60_000);

  const putMeta = (via: string) =>
    api<ErrorBody & { meta: Record<string, string> }>(`${nodeUrl(via)}/api/v1/nodes/n1/meta`, {
      method: "PUT",
      token: token(),
      body: { meta: { rack: "r7" } },
    });

  /** The level-2 command is refused by the (upgraded) leader, naming exactly `behind`. */
  const refusedNaming = async (leader: string, behind: string[]) => {
    await leadWith(leader);
    const r = await putMeta(leader);
    assertEquals([r.status, r.body.error?.code], [409, "feature_unavailable"], JSON.stringify(r));
    const m = r.body.error.message;
    assert(m.includes("node.meta needs cluster level 2; the cluster runs at level 1"), m);
    for (const n of ["n1", "n2", "n3"]) {
      const named = m.includes(`${n} (voter, ${PREVIOUS.version})`);
      assertEquals(named, behind.includes(n), `${n} named as not upgraded: ${m}`);
    }
    const s = (await api<Status>(`${nodeUrl(leader)}/api/v1/cluster`, { token: token() })).body;
    assertEquals(s.level, 1);
    assertEquals(
      s.members.map((x) => [x.name, x.version]),
      ["n1", "n2", "n3"].map((n) => [n, behind.includes(n) ? PREVIOUS.version : VERSION]),
    );
  };

  try {
    await step(t, `three nodes on ${PREVIOUS.tag} run a guest`, async () => {
      await cluster.start(3);
      await ok(...guestImportArgs(guest, "guest"));
      // On n3, upgraded last: its host restarts in the very step that raises the level.
      await ok(
        ...["vm", "create", "keep", "--image", "guest", "--memory", "128M", "--node", "n3"],
        "--wait",
      );
      host = (JSON.parse(await ok("vm", "show", "keep", "-o", "json")) as { node: string }).node;
      assertEquals(host, "n3");
      await eventually("the guest counts", async () => (await guestCounters()).length > 0, 180_000);
      qemuPid = (await cluster.qemuPids(host)).get("keep")!;
      assert(qemuPid > 0, `no QEMU for keep on ${host}`);
      const s = (await api<Status>(`${live()}/api/v1/cluster`, { token: token() })).body;
      assertEquals(s.level, undefined, `${PREVIOUS.tag} knows no cluster level`);
    });

    await step(t, "n1 upgraded: level 1, node meta refused naming n2 and n3", async () => {
      await upgrade("n1");
      await refusedNaming("n1", ["n2", "n3"]);
      const r = await cli([
        ...["node", "meta", "n1", "rack=r7"],
        ...["--server", nodeUrl("n1"), "--token", token()],
      ]);
      assert(r.code !== 0, r.stdout);
      assert(/needs cluster level 2/.test(r.stderr), r.stderr);
    });

    await step(
      t,
      `a VM on the upgraded n1 under a ${PREVIOUS.version} leader starts, reports and snapshots`,
      async () => {
        // n1 holds back what a 0.1.0 leader would refuse (a display in its reports) and what a
        // 0.1.0 host could not take over (a VGA device): core/upgrade/levels.ts FEATURE_LEVEL.
        await leadWith("n2");
        await ok(
          ...["vm", "create", "mixed", "--image", "guest", "--memory", "128M", "--node", "n1"],
          "--wait",
        );
        const vm = JSON.parse(await ok("vm", "show", "mixed", "-o", "json"));
        assertEquals([vm.state, vm.node, vm.display ?? null], ["running", "n1", null]);
        // At level 1 snapshots are no operations (0.1.0 would never run one): the 0.1.0 leader
        // forwards them to the VM's host, which runs them at once and answers when done.
        const at = `${nodeUrl("n2")}/api/v1/vms/mixed/snapshots`;
        const made = await api<{ name: string; memory: boolean }>(at, {
          method: "POST",
          token: token(),
          body: { name: "s1", memory: true },
        });
        assertEquals(
          [made.status, made.body.name, made.body.memory],
          [201, "s1", true],
          JSON.stringify(made),
        );
        const back = await api<{ name: string }>(`${at}/s1/restore`, {
          method: "POST",
          token: token(),
        });
        assertEquals([back.status, back.body.name], [200, "mixed"], JSON.stringify(back));
        await eventually(
          "mixed runs again",
          async () => JSON.parse(await ok("vm", "show", "mixed", "-o", "json")).state === "running",
        );
        // The CLI waits for an operation, or takes the finished answer: via the 0.1.0 leader,
        // and via the upgraded host itself (it runs the call rather than forward it).
        const via = (node: string, ...args: string[]) =>
          cli([...args, "--server", nodeUrl(node), "--token", token()]);
        const taken = await via("n2", "vm", "snapshot", "create", "mixed", "s2");
        assertEquals(
          [taken.code, taken.stdout],
          [0, "snapshot s2 of mixed created\n"],
          taken.stderr,
        );
        const gone = await via("n1", "vm", "snapshot", "delete", "mixed", "s2");
        assertEquals([gone.code, gone.stdout], [0, "snapshot s2 of mixed deleted\n"], gone.stderr);
        const listed = JSON.parse(await ok("vm", "snapshot", "list", "mixed", "-o", "json"));
        assertEquals(listed.snapshots.map((x: { name: string }) => x.name), ["s1"]);
        await ok("vm", "delete", "mixed", "--force", "--wait");
      },
    );

    await step(t, "n2 upgraded: still level 1, refused naming n3 only", async () => {
      await upgrade("n2");
      await refusedNaming("n2", ["n3"]);
    });

    await step(
      t,
      `the upgraded leader has a ${PREVIOUS.version} host snapshot its VM at once`,
      async () => {
        // n3 would never run a snapshot operation: n2 forwards the call, as 0.1.0 did.
        await leadWith("n2");
        await ok(
          ...["vm", "create", "old", "--image", "guest", "--memory", "128M", "--node", "n3"],
          "--wait",
        );
        const via = (...args: string[]) =>
          cli([...args, "--server", nodeUrl("n2"), "--token", token()]);
        const taken = await via("vm", "snapshot", "create", "old", "s1", "--memory", "-o", "json");
        assertEquals(taken.code, 0, taken.stderr);
        const snap = JSON.parse(taken.stdout);
        assertEquals([snap.name, snap.memory, snap.id], ["s1", true, undefined], taken.stdout);
        const gone = await via("vm", "snapshot", "delete", "old", "s1");
        assertEquals([gone.code, gone.stdout], [0, "snapshot s1 of old deleted\n"], gone.stderr);
        await ok("vm", "delete", "old", "--force", "--wait");
      },
    );

    let countedBefore = 0;
    await step(t, "n3 upgraded: the leader raises the level to 2, node meta works", async () => {
      countedBefore = Math.max(...await guestCounters());
      const before = (await api<Status>(`${nodeUrl("n1")}/api/v1/cluster`, { token: token() }))
        .body;
      assertEquals(before.level, 1, "n3 still runs 0.1.0: the level has not moved");
      await upgrade("n3");
      const s = await eventually("level 2", async () => {
        const s = (await api<Status>(`${nodeUrl("n3")}/api/v1/cluster`, { token: token() }))
          .body;
        return s.level === 2 ? s : undefined;
      }, 60_000);
      assertEquals(s.members.map((m) => m.version), [VERSION, VERSION, VERSION]);
      const r = await putMeta("n3");
      assertEquals([r.status, r.body.meta], [200, { rack: "r7" }], JSON.stringify(r.body));
      const shown = JSON.parse(await ok("node", "show", "n1", "-o", "json"));
      assertEquals(shown.meta, { rack: "r7" });
      const status = JSON.parse(await ok("cluster", "status", "-o", "json"));
      assertEquals(status.level, 2);
    });

    await step(
      t,
      "the guest ran throughout: same QEMU, still counting, never rebooted",
      async () => {
        assertEquals((await cluster.qemuPids(host)).get("keep"), qemuPid);
        await eventually(
          "the guest counts past the last upgrade",
          async () => Math.max(...await guestCounters()) > countedBefore + 2,
          60_000,
        );
        const consoleText = await fetchConsole(nodeUrl(host), token(), "keep");
        assertEquals(bootIds(consoleText).length, 1, "one boot");
        console.log(
          `guest on ${host}: QEMU pid ${qemuPid} throughout, counter ${countedBefore} before the ` +
            `last upgrade, ${Math.max(...counters(consoleText))} after`,
        );
        const vm = JSON.parse(await ok("vm", "show", "keep", "-o", "json"));
        assertEquals([vm.state, vm.node], ["running", host]);
      },
    );

    await step(t, `a ${PREVIOUS.version} node may not join the level-2 cluster`, async () => {
      const dir = `${cluster.baseDir}/old-joiner`;
      const tokenFile = `${cluster.baseDir}/old-joiner.token`;
      await Deno.writeTextFile(tokenFile, (await cluster.createJoinToken()) + "\n");
      const r = await run(Deno.execPath(), [
        ...["run", "-A", previous.mainTs, "node", "start", "--name", "n4", "--data-dir", dir],
        ...["--listen", "127.0.0.1:0", "--networking", "off"],
        ...["--join", nodeUrl("n2"), "--token-file", tokenFile],
      ], { cwd: previous.dir, env: { NOVACTL_ACCEL: "tcg" }, timeoutMs: 90_000 });
      const said = r.stdout + r.stderr;
      assert(r.code !== 0, `joined anyway: ${said}`);
      assert(
        said.includes(
          `n4 runs novactl ${PREVIOUS.version}, which supports cluster levels up to 1; this cluster runs at level 2`,
        ),
        said,
      );
      const s = (await api<Status>(`${nodeUrl("n2")}/api/v1/cluster`, { token: token() })).body;
      assertEquals(s.members.map((m) => m.name), ["n1", "n2", "n3"]);
    });

    await step(t, "a program older than the data dir's level refuses it, naming both", async () => {
      const n1 = cluster.node("n1");
      await cluster.stopNode("n1");
      const r = await run(Deno.execPath(), [
        ...["run", "-A", fromFileUrl(new URL("../main.ts", import.meta.url))],
        ...["node", "start", "--name", "n1", "--data-dir", n1.dataDir],
        ...["--listen", n1.listen, "--networking", "off"],
      ], {
        env: { [PRETEND_RELEASE_ENV]: PREVIOUS.version, NOVACTL_CA: clusterCaFile() ?? "" },
        timeoutMs: 60_000,
      });
      assert(r.code !== 0, `started anyway: ${r.stdout}${r.stderr}`);
      const said = r.stdout + r.stderr;
      assert(said.includes(`is at cluster level 2, written by novactl ${VERSION} or newer`), said);
      assert(said.includes(`this is novactl ${PREVIOUS.version}`), said);
      // The real program takes its data dir back.
      await cluster.restart("n1");
      await cluster.waitForVoters(3, ["n1"]);
    });
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
    await Deno.remove(previous.dir, { recursive: true }).catch(() => {});
  }
});
