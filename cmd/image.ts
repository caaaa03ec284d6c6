/** `novactl image ...`: import kernel/initrd or qcow2 images, list, show, delete, pull onto a host. */
import { Command } from "commander";
import { createHash } from "node:crypto";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printFields, printTable, render } from "./output.ts";
import { NovaError } from "../core/errors/mod.ts";
import type { ApiClient } from "./client.ts";

interface Uploaded {
  sha256: string;
  size: number;
  node: string;
  virtualBytes?: number;
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (err) {
    throw new NovaError("usage", `cannot read ${path}: ${(err as Error).message}`);
  }
  for await (const chunk of f.readable) hash.update(chunk);
  return hash.digest("hex");
}

async function uploadFile(api: ApiClient, path: string, qcow2 = false): Promise<Uploaded> {
  const sha = await sha256OfFile(path);
  return await api.upload<Uploaded>(`/api/v1/blobs/${sha}${qcow2 ? "?format=qcow2" : ""}`, path);
}

interface ImportOpts extends GlobalOpts {
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  disk?: string;
}

async function importImage(name: string, opts: ImportOpts): Promise<unknown> {
  if (!!opts.kernel === !!opts.disk) {
    throw new NovaError("usage", "give exactly one of --kernel or --disk");
  }
  if (opts.disk && (opts.initrd || opts.cmdline)) {
    throw new NovaError("usage", "--initrd and --cmdline go with --kernel, not --disk");
  }
  const api = clientOf(opts);
  if (opts.disk) {
    const disk = await uploadFile(api, opts.disk, true);
    return await api.request("POST", "/api/v1/images", {
      name,
      disk: { sha256: disk.sha256, size: disk.size, virtualBytes: disk.virtualBytes },
      source: disk.node,
    });
  }
  const kernel = await uploadFile(api, opts.kernel!);
  const initrd = opts.initrd ? await uploadFile(api, opts.initrd) : undefined;
  return await api.request("POST", "/api/v1/images", {
    name,
    kernel: { sha256: kernel.sha256, size: kernel.size },
    initrd: initrd && { sha256: initrd.sha256, size: initrd.size },
    cmdline: opts.cmdline,
    source: kernel.node,
  });
}

export function imageCommand(): Command {
  const image = new Command("image").description("VM images (direct-boot kernels and qcow2 disks)");

  withClientOptions(
    image.command("import").argument("<name>").description("upload an image into the cluster")
      .option("--kernel <file>", "kernel for direct boot")
      .option("--initrd <file>", "initrd for direct boot")
      .option("--cmdline <text>", "kernel command line")
      .option("--disk <file>", "qcow2 disk image"),
  ).action(async (name: string, opts: ImportOpts) => {
    const r = await importImage(name, opts) as Record<string, unknown>;
    render(opts.output, r, () => console.log(`image ${name} imported (${r.kind})`));
  });

  withClientOptions(withListLimit(image.command("list").description("list images"))).action(
    async (opts: ListOpts) => {
      const r = await clientOf(opts).list("/api/v1/images", "images", opts.limit);
      render(
        opts.output,
        r,
        () =>
          printTable(r.images.map((i) => ({ ...i, sources: (i.sources as string[]).join(",") })), [
            "name",
            "kind",
            "sources",
            "createdAt",
          ]),
      );
    },
  );

  withClientOptions(image.command("show").argument("<name>").description("show one image"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown>>(
        `/api/v1/images/${encodeURIComponent(name)}`,
      );
      render(opts.output, r, () => printFields(r));
    });

  withClientOptions(image.command("delete").argument("<name>").description("delete an image"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).request(
        "DELETE",
        `/api/v1/images/${encodeURIComponent(name)}`,
      );
      render(opts.output, r, () => console.log(`image ${name} deleted`));
    });

  withClientOptions(
    image.command("pull").argument("<name>").description("make an image's files present on a host")
      .option("--node <name>", "host to pull onto (default: the server's node)"),
  ).action(async (name: string, opts: GlobalOpts & { node?: string }) => {
    const q = opts.node ? `?node=${encodeURIComponent(opts.node)}` : "";
    const r = await clientOf(opts).request<{ node: string }>(
      "POST",
      `/api/v1/images/${encodeURIComponent(name)}/pull${q}`,
    );
    render(opts.output, r, () => console.log(`image ${name} present on ${r.node}`));
  });

  return image;
}
