/** Builds the cloud-init NoCloud seed: an ISO 9660 volume labelled `cidata` (genisoimage). */
import { join } from "node:path";
import { NovaError } from "../../core/errors/mod.ts";
import type { SeedFiles } from "../../core/cloudinit/mod.ts";
import { renameDurably, tempPathFor } from "../../core/store/mod.ts";

export async function buildSeedIso(output: string, files: SeedFiles): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "novactl-seed-" });
  try {
    for (const [name, text] of Object.entries(files)) {
      await Deno.writeTextFile(join(dir, name), text, { mode: 0o600 });
    }
    const tmp = tempPathFor(output, ".iso");
    const out = await new Deno.Command("genisoimage", {
      args: [
        "-quiet",
        "-output",
        tmp,
        "-volid",
        "cidata",
        "-joliet",
        "-rock",
        ...Object.keys(files),
      ],
      cwd: dir,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new NovaError(
        "internal",
        `genisoimage failed: ${new TextDecoder().decode(out.stderr).trim()}`,
      );
    }
    await renameDurably(tmp, output);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
