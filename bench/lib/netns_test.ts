/**
 * The network lab's cuts are real: tiny HTTP servers in two namespaces, probed from the
 * namespaces and from the test process, see exactly the links the lab says it cut.
 */
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { NetworkLab, NODE_PORT } from "./netns.ts";
import { ManagedProcess } from "./process.ts";
import { waitFor } from "./util.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const NODES = ["a", "b"];

/** Which of `targets` answer an HTTP request from inside `namespace` (or from here). */
async function reachable(lab: NetworkLab, from: string | null, targets: string[]) {
  const urls = targets.map((t) => `http://${lab.address(t)}:${NODE_PORT}/`);
  const code = `const urls = ${JSON.stringify(urls)};
    const ok = await Promise.all(urls.map((u) => fetch(u, { signal: AbortSignal.timeout(700) })
      .then((r) => r.text().then(() => r.ok), () => false)));
    console.log(JSON.stringify(ok));`;
  const command = from ? "ip" : Deno.execPath();
  const prefix = from ? ["netns", "exec", lab.namespace(from), Deno.execPath()] : [];
  const out = await new Deno.Command(command, { args: [...prefix, "eval", code] }).output();
  const ok: boolean[] = JSON.parse(new TextDecoder().decode(out.stdout));
  return Object.fromEntries(targets.map((t, i) => [t, ok[i]]));
}

/** Reachability between every ordered pair of nodes, plus from the test process. */
async function matrix(lab: NetworkLab): Promise<Record<string, Record<string, boolean>>> {
  const result: Record<string, Record<string, boolean>> = {};
  for (const from of NODES) {
    result[from] = await reachable(lab, from, NODES.filter((n) => n !== from));
  }
  result.test = await reachable(lab, null, NODES);
  return result;
}

const ALL_OK = { a: { b: true }, b: { a: true }, test: { a: true, b: true } };

async function startServer(lab: NetworkLab, name: string, dir: string) {
  const code = `Deno.serve({ hostname: "${lab.address(name)}", port: ${NODE_PORT}, ` +
    `onListen() {} }, () => new Response("${name}"));`;
  return await ManagedProcess.spawn({
    name,
    command: "ip",
    args: ["netns", "exec", lab.namespace(name), Deno.execPath(), "eval", code],
    logPath: `${dir}/${name}.log`,
  });
}

testWithTimeout({
  name: "network lab: one-way cuts, partitions and link down act in the kernel",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "netns-test-" });
  const lab = await NetworkLab.create();
  const servers: ManagedProcess[] = [];
  try {
    for (const name of NODES) await lab.attach(name);
    for (const name of NODES) servers.push(await startServer(lab, name, dir));
    await waitFor(
      async () => JSON.stringify(await matrix(lab)) === JSON.stringify(ALL_OK) || undefined,
      {
        timeoutMs: 20_000,
        description: "servers reachable",
      },
    );

    await lab.cut("a", "b");
    assertEquals(await matrix(lab), { ...ALL_OK, a: { b: false } }, "only a->b is cut");
    assertEquals(lab.describeFaults(), ["a->b"]);

    await lab.heal();
    assertEquals(await matrix(lab), ALL_OK, "healed");

    await lab.partition(["a"], ["b"]);
    assertEquals(await matrix(lab), { ...ALL_OK, a: { b: false }, b: { a: false } });

    await lab.heal();
    await lab.setLink("b", false);
    assertEquals(await matrix(lab), {
      a: { b: false },
      b: { a: false },
      test: { a: true, b: false },
    }, "a link down cuts the node off from everyone, the test process too");

    await lab.heal();
    assertEquals(await matrix(lab), ALL_OK, "healed after link down");
  } finally {
    for (const server of servers) await server.stop(1_000);
    await lab.destroy();
    await Deno.remove(dir, { recursive: true });
  }
  const namespaces = new TextDecoder().decode(
    (await new Deno.Command("ip", { args: ["netns", "list"] }).output()).stdout,
  );
  assert(!namespaces.includes(lab.hubNamespace), "destroy() removed the namespaces");
});

testWithTimeout({
  name: "network lab: sweepStale removes what a dead run left, not a live run's",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const deadRun = "nvlab-999999999x1-n1"; // no process can have this pid
  await new Deno.Command("ip", { args: ["netns", "add", deadRun] }).output();
  const live = await NetworkLab.create();
  try {
    const removed = await NetworkLab.sweepStale();
    assert(removed.includes(deadRun), `swept ${removed.join(", ")}`);
    const namespaces = new TextDecoder().decode(
      (await new Deno.Command("ip", { args: ["netns", "list"] }).output()).stdout,
    );
    assert(!namespaces.includes(deadRun), "the dead run's namespace is gone");
    assert(namespaces.includes(live.hubNamespace), "the live lab's namespace is kept");
  } finally {
    await live.destroy();
    await new Deno.Command("ip", { args: ["netns", "del", deadRun] }).output();
  }
});
