/** The node's identity file (`DIR/node.json`) and other small files in the data dir. */
import { join } from "node:path";
import { writeFileDurably } from "./files.ts";

export interface NodeIdentity {
  name: string;
  clusterId: string;
  /** URL peers and clients use to reach this node. */
  url: string;
  /**
   * This node's own peer credential, sent (over loopback plain HTTP only) instead of a
   * client certificate; the cluster stores only its hash. Never shared between nodes.
   */
  peerCredential: string;
  /**
   * Fingerprints of the members at join time, trusted for Raft traffic until this
   * node's replicated state lists members itself (a joiner's state starts empty).
   */
  joinedWith?: { name: string; fingerprint: string; credentialHash: string }[];
  createdAt: string;
  /** Set when the node learns it was removed; it must not rejoin with this data dir. */
  removedAt?: string;
}

export function identityPath(dataDir: string): string {
  return join(dataDir, "node.json");
}

export async function readIdentity(dataDir: string): Promise<NodeIdentity | null> {
  try {
    return JSON.parse(await Deno.readTextFile(identityPath(dataDir))) as NodeIdentity;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

export async function writeIdentity(dataDir: string, id: NodeIdentity): Promise<void> {
  await writeFileDurably(identityPath(dataDir), JSON.stringify(id, null, 2) + "\n");
}
