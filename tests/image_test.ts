/**
 * Image store on a real 2-node cluster: upload through the CLI, checksum
 * verification, qcow2 validation, and a host fetching files from a peer.
 */
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { api, cli, eventually, step } from "./support/api.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

async function randomFile(dir: string, name: string, bytes: number): Promise<string> {
  const path = `${dir}/${name}`;
  const data = new Uint8Array(bytes);
  for (let off = 0; off < bytes; off += 65536) {
    crypto.getRandomValues(data.subarray(off, off + 65536));
  }
  await Deno.writeFile(path, data);
  return path;
}

testWithTimeout({
  name: "images: import, validate, and fetch from a peer with checksum verification",
  timeoutMs: 10 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const cluster = new NovactlCluster();
  await cluster.start(2, { voters: 1 });
  const [n1, n2] = cluster.nodes;
  const token = cluster.adminToken;
  const work = await Deno.makeTempDir({ prefix: "novactl-images-" });
  const run = (...args: string[]) => cli([...args, "--server", n1.url, "--token", token]);
  try {
    const kernel = await randomFile(work, "vmlinuz", 3 * 1024 * 1024 + 17);
    const initrd = await randomFile(work, "initrd.img", 1024 * 1024);

    // On-demand fetching is what these steps test: no background copies meanwhile.
    assertEquals((await run("config", "set", "images.replicateToAllHosts", "false")).code, 0);

    await step(t, "kernel + initrd import records the image with checksums", async () => {
      const r = await run(
        "image",
        "import",
        "tiny",
        "--kernel",
        kernel,
        "--initrd",
        initrd,
        "--cmdline",
        "console=ttyS0",
        "-o",
        "json",
      );
      assertEquals(r.code, 0, r.stderr);
      const img = JSON.parse(r.stdout);
      assertEquals(img.kind, "kernel");
      assertEquals(img.kernel.size, 3 * 1024 * 1024 + 17);
      assertEquals(img.sources, ["n1"]);
      // A follower answers lists from its own replica, which applies the entry a moment later.
      await eventually("the image replicated to n2", async () => {
        const list = await api<{ images: { name: string }[] }>(`${n2.url}/api/v1/images`, {
          token,
        });
        return list.body.images.some((i) => i.name === "tiny") || undefined;
      });
    });

    await step(
      t,
      "a host lacking the files fetches them from the peer and verifies them",
      async () => {
        const img =
          (await api<{ kernel: { sha256: string } }>(`${n1.url}/api/v1/images/tiny`, { token }))
            .body;
        const target = `${n2.dataDir}/blobs/${img.kernel.sha256}`;
        assert(!(await exists(target)), "n2 starts without the kernel");
        const r = await run("image", "pull", "tiny", "--node", "n2");
        assertEquals(r.code, 0, r.stderr);
        assertEquals(await Deno.readFile(target), await Deno.readFile(kernel));
      },
    );

    await step(t, "a corrupted copy on the source is refused by the fetching host", async () => {
      const file = await randomFile(work, "other-kernel", 200_000);
      assertEquals((await run("image", "import", "other", "--kernel", file)).code, 0);
      const img =
        (await api<{ kernel: { sha256: string } }>(`${n1.url}/api/v1/images/other`, { token }))
          .body;
      const src = `${n1.dataDir}/blobs/${img.kernel.sha256}`;
      const bytes = await Deno.readFile(src);
      bytes[1000] ^= 0xff;
      await Deno.writeFile(src, bytes);
      const r = await run("image", "pull", "other", "--node", "n2");
      assertEquals(r.code, 1);
      assert(/checksum mismatch/.test(r.stderr), r.stderr);
      assert(!(await exists(`${n2.dataDir}/blobs/${img.kernel.sha256}`)), "nothing kept on n2");
    });

    await step(t, "qcow2 disks are validated; bad input changes nothing", async () => {
      const disk = `${work}/disk.qcow2`;
      const mk = await new Deno.Command("qemu-img", {
        args: ["create", "-q", "-f", "qcow2", disk, "64M"],
      }).output();
      assert(mk.success);
      const ok = await run("image", "import", "base", "--disk", disk, "-o", "json");
      assertEquals(ok.code, 0, ok.stderr);
      assertEquals(JSON.parse(ok.stdout).disk.virtualBytes, 64 * 1024 * 1024);
      const raw = await randomFile(work, "raw.img", 100_000);
      const bad = await run("image", "import", "notqcow", "--disk", raw);
      assertEquals(bad.code, 1);
      assert(/not a qcow2 image/.test(bad.stderr), bad.stderr);
      const dup = await run("image", "import", "base", "--disk", disk);
      assertEquals(dup.code, 1);
      assert(/already exists/.test(dup.stderr), dup.stderr);
      const both = await run("image", "import", "x", "--disk", disk, "--kernel", kernel);
      assertEquals(both.code, 2);
      const names =
        (await api<{ images: { name: string }[] }>(`${n1.url}/api/v1/images`, { token })).body
          .images
          .map((i) => i.name).sort();
      assertEquals(names, ["base", "other", "tiny"]);
    });

    await step(
      t,
      "with replication on, every host gets every image in the background",
      async () => {
        const file = await randomFile(work, "replicated-kernel", 300_000);
        assertEquals((await run("image", "import", "rep", "--kernel", file)).code, 0);
        const img =
          (await api<{ kernel: { sha256: string } }>(`${n1.url}/api/v1/images/rep`, { token }))
            .body;
        assertEquals((await run("config", "set", "images.replicateToAllHosts", "true")).code, 0);
        await eventually(
          "n2 holds the kernel",
          () => exists(`${n2.dataDir}/blobs/${img.kernel.sha256}`),
          30_000,
        );
        assertEquals(
          await Deno.readFile(`${n2.dataDir}/blobs/${img.kernel.sha256}`),
          await Deno.readFile(file),
        );
      },
    );
  } catch (err) {
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
