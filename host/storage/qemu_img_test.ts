import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { NovaError } from "../../core/errors/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { imageInfo, PROBE_LIMITS, qemuImg } from "./qemu_img.ts";

testWithTimeout({
  name: "image probes run under resource limits: fine for an image, fatal when too tight",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "novactl-probe-" });
  try {
    const img = `${dir}/a.qcow2`;
    await qemuImg(["create", "-q", "-f", "qcow2", img, "16M"]);
    const info = await imageInfo(img);
    assertEquals([info.format, info["virtual-size"]], ["qcow2", 16 * 2 ** 20]);
    assert(PROBE_LIMITS.addressSpaceBytes <= 2 ** 30 && PROBE_LIMITS.cpuSeconds <= 30);
    // Far too little address space for qemu-img to even start: the limit is really applied.
    const err = await assertRejects(
      () => imageInfo(img, { addressSpaceBytes: 8 * 2 ** 20, cpuSeconds: 30 }),
      NovaError,
    );
    assert(err.code === "validation" || err.code === "internal", err.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
