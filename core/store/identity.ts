/** The node's identity file (`DIR/node.json`) and other small files in the data dir. */
import { join } from "node:path";
import { writeFileDurably } from "./files.ts";

export interface NodeIdentity {
  name: string;
  clusterId: string;
  /** URL peers and clients use to reach this node. */
  url: string;
  /** Shared secret authenticating peer traffic. */
  clusterSecret: string;
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
