/** Records for unit tests that drive the state machine with commands. */
import type { VmSpec } from "../fsm/mod.ts";

/** A stopped VM on `node` using the image "img", no disks, changed by `extra`. */
export function testVmSpec(name: string, node: string, extra: Partial<VmSpec> = {}): VmSpec {
  return {
    name,
    uuid: crypto.randomUUID(),
    image: "img",
    cpus: 1,
    memoryMiB: 256,
    node,
    ha: false,
    labels: {},
    desired: "stopped",
    restartPolicy: "never",
    disks: [],
    cloudInit: null,
    template: false,
    generation: 0,
    snapshots: [],
    ...extra,
  };
}
