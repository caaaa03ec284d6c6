/** Configuration operations: every change is a new version through the Raft log. */
import type { ClusterNode } from "./node.ts";
import { type ClusterConfig, validateConfigPatch, validateFullConfig } from "../config/mod.ts";
import type { ConfigVersion } from "../fsm/mod.ts";
import { NotFoundError } from "../errors/mod.ts";

export async function readConfig(node: ClusterNode): Promise<ConfigVersion> {
  await node.linearizableRead();
  return node.fsm.config();
}

export async function patchConfig(
  node: ClusterNode,
  patch: Record<string, unknown>,
  by: string,
  ifVersion?: number,
): Promise<ConfigVersion> {
  const changes = validateConfigPatch(patch);
  const r = await node.propose({ op: "config.patch", changes, ifVersion, by, at: Date.now() }) as {
    version: number;
  };
  return versionAfterWrite(node, r.version);
}

/** Sets one key; answers with the value as stored (after coercion) and the new version. */
export async function setConfigKey(
  node: ClusterNode,
  key: string,
  value: unknown,
  by: string,
  ifVersion?: number,
): Promise<{ key: string; value: unknown; version: number }> {
  const changes = validateConfigPatch({ [key]: value });
  const r = await node.propose({ op: "config.patch", changes, ifVersion, by, at: Date.now() }) as {
    version: number;
  };
  return { key, value: (changes as Record<string, unknown>)[key], version: r.version };
}

/** The version a write created; usually still the latest, which is cached. */
function versionAfterWrite(node: ClusterNode, version: number): ConfigVersion {
  const latest = node.fsm.config();
  return latest.version === version ? latest : node.fsm.configVersion(version);
}

export async function replaceConfig(
  node: ClusterNode,
  doc: Record<string, unknown>,
  by: string,
  ifVersion?: number,
): Promise<ConfigVersion> {
  const config: ClusterConfig = validateFullConfig(doc);
  const r = await node.propose({ op: "config.replace", config, ifVersion, by, at: Date.now() }) as {
    version: number;
  };
  return node.fsm.configVersion(r.version);
}

export async function rollbackConfig(
  node: ClusterNode,
  version: number,
  by: string,
  ifVersion?: number,
): Promise<ConfigVersion> {
  await node.linearizableRead();
  node.fsm.configVersion(version); // 404 before proposing anything
  const r = await node.propose({
    op: "config.rollback",
    version,
    ifVersion,
    by,
    at: Date.now(),
  }) as {
    version: number;
  };
  return node.fsm.configVersion(r.version);
}

export async function configHistory(
  node: ClusterNode,
  limit: number,
  before?: number,
): Promise<ConfigVersion[]> {
  await node.linearizableRead();
  return node.fsm.configHistory(limit, before);
}

export async function readConfigKey(node: ClusterNode, key: string) {
  const cv = await readConfig(node);
  if (!(key in cv.config)) throw new NotFoundError("configuration key", key);
  return { key, value: (cv.config as Record<string, unknown>)[key], version: cv.version };
}
