/** Image operations: recording images in cluster state and making their files present on a host. */
import type { ClusterNode } from "./node.ts";
import type { BlobRef, ImageRecord, ImageSpec } from "../fsm/mod.ts";
import { NotFoundError, ValidationError } from "../errors/mod.ts";
import type { BlobInfo, BlobStore } from "../../host/storage/mod.ts";
import { PEER_SECRET_HEADER } from "../peer/mod.ts";

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
  const headers = { [PEER_SECRET_HEADER]: node.identity.clusterSecret };
  const sources = ordered.map((m) => ({ url: m.url, headers }));
  const out: BlobInfo[] = [];
  for (const b of imageBlobs(image)) out.push(await blobs.ensure(b.sha256, sources));
  return out;
}
