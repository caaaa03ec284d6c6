/** Image operations: recording images in cluster state and making their files present on a host. */
import type { ClusterNode } from "./node.ts";
import type { BlobRef, ImageRecord, ImageSpec } from "../fsm/mod.ts";
import { NotFoundError, ValidationError } from "../errors/mod.ts";
import type { BlobInfo, BlobStore } from "../../host/storage/mod.ts";
import { log } from "../log/mod.ts";

export async function createImage(
  node: ClusterNode,
  spec: ImageSpec,
  by: string,
): Promise<ImageRecord> {
  checkImageShape(spec);
  for (const s of spec.sources) {
    if (!node.fsm.member(s)) {
      throw ValidationError.field("source", `"${s}" is not a cluster member`);
    }
  }
  return await node.propose({ op: "image.create", image: spec, by, at: Date.now() }) as ImageRecord;
}

function checkImageShape(spec: ImageSpec): void {
  if (spec.kind === "kernel") {
    if (!spec.kernel) throw ValidationError.field("kernel", "a kernel image needs a kernel file");
    if (spec.disk) {
      throw ValidationError.field("disk", "an image is either a kernel or a disk, not both");
    }
  } else {
    if (!spec.disk) throw ValidationError.field("disk", "a disk image needs a qcow2 file");
    if (spec.kernel || spec.initrd || spec.cmdline) {
      throw ValidationError.field(
        "kernel",
        "kernel, initrd and cmdline are for kernel images only",
      );
    }
  }
}

export async function deleteImage(node: ClusterNode, name: string): Promise<void> {
  await node.linearizableRead();
  if (!node.fsm.image(name)) throw new NotFoundError("image", name);
  await node.propose({ op: "image.delete", name, at: Date.now() });
}

export function imageBlobs(image: ImageSpec): BlobRef[] {
  return [image.kernel, image.initrd, image.disk].filter((b): b is BlobRef => !!b);
}

/**
 * Makes every file of an image present on this host, fetching missing ones
 * from the image's source nodes first, then from any other member.
 */
export async function pullImage(
  node: ClusterNode,
  blobs: BlobStore,
  name: string,
): Promise<BlobInfo[]> {
  const image = node.fsm.image(name);
  if (!image) throw new NotFoundError("image", name);
  const members = node.fsm.members().filter((m) => m.name !== node.id);
  const ordered = [
    ...members.filter((m) => image.sources.includes(m.name)),
    ...members.filter((m) => !image.sources.includes(m.name)),
  ];
  const sources = ordered.map((m) => ({
    url: m.url,
    fetch: node.peerHttp.fetch,
  }));
  const out: BlobInfo[] = [];
  for (const b of imageBlobs(image)) out.push(await blobs.ensure(b.sha256, sources));
  // Checked where it is about to be used, whoever uploaded it: QEMU opens what a qcow2 names.
  if (image.disk) await blobs.assertSafeDisk(image.disk.sha256);
  return out;
}

/**
 * Every host keeps a copy of every image, fetched in the background: a VM
 * can then start anywhere (HA failover, migration) even when the host the
 * image was uploaded to is gone. One image at a time, so a large upload
 * elsewhere never floods this host.
 */
export function keepImagesReplicated(
  node: ClusterNode,
  blobs: BlobStore,
  intervalMs = 5_000,
): { stop(): void } {
  let stopped = false;
  const missing = async (image: ImageRecord) => {
    for (const b of imageBlobs(image)) if (!(await blobs.stat(b.sha256))) return true;
    return false;
  };
  const loop = async () => {
    while (!stopped) {
      const enabled = node.fsm.settings()["images.replicateToAllHosts"];
      for (const image of enabled ? node.fsm.images() : []) {
        if (stopped) break;
        try {
          if (await missing(image)) await pullImage(node, blobs, image.name);
        } catch (err) {
          log.debug("image replication deferred", { image: image.name, error: String(err) });
        }
      }
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  };
  loop();
  return { stop: () => (stopped = true) };
}
