/** Runs `qemu-img` with a deadline; failures carry its stderr. */
import { NovaError, TimeoutError } from "../../core/errors/mod.ts";

export interface ImageInfo {
  "virtual-size": number;
  "actual-size"?: number;
  format: string;
  "backing-filename"?: string;
  "full-backing-filename"?: string;
}

export async function qemuImg(args: string[], timeoutMs = 120_000): Promise<string> {
  const child = new Deno.Command("qemu-img", {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  })
    .spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  let out: Deno.CommandOutput;
  try {
    out = await child.output();
  } catch (err) {
    throw new NovaError("internal", `cannot run qemu-img: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
  if (out.signal === "SIGKILL") throw new TimeoutError(`qemu-img ${args[0]} after ${timeoutMs} ms`);
  const stderr = new TextDecoder().decode(out.stderr).trim();
  if (!out.success) throw new NovaError("internal", `qemu-img ${args[0]} failed: ${stderr}`);
  return new TextDecoder().decode(out.stdout);
}

export async function imageInfo(path: string): Promise<ImageInfo> {
  return JSON.parse(await qemuImg(["info", "--output=json", "-U", path])) as ImageInfo;
}
