/** The small test guest (kernel + busybox initramfs with qemu-ga), built once into a cache dir. */
import { clusterFetch } from "./tls.ts";
export interface TestGuest {
  dir: string;
  kernel: string;
  initrd: string;
  cmdline: string;
}

let built: Promise<TestGuest> | null = null;

export function testGuest(): Promise<TestGuest> {
  built ??= (async () => {
    const script = new URL("../../scripts/build_guest.sh", import.meta.url).pathname;
    const out = await new Deno.Command("bash", { args: [script], stdout: "piped", stderr: "piped" })
      .output();
    const stdout = new TextDecoder().decode(out.stdout).trim();
    if (!out.success) {
      throw new Error(`build_guest.sh failed:\n${new TextDecoder().decode(out.stderr)}`);
    }
    const dir = stdout.split("\n").pop()!;
    return {
      dir,
      kernel: `${dir}/vmlinuz`,
      initrd: `${dir}/initrd.img`,
      cmdline: (await Deno.readTextFile(`${dir}/cmdline`)).trim(),
    };
  })();
  return built;
}

/** Counter values the guest printed (`NOVACTL-COUNTER n`), in order. */
export function counters(consoleText: string): number[] {
  return [...consoleText.matchAll(/NOVACTL-COUNTER (\d+)/g)].map((m) => Number(m[1]));
}

export function bootIds(consoleText: string): string[] {
  return [...consoleText.matchAll(/NOVACTL-GUEST-READY boot_id=([0-9a-f-]+)/g)].map((m) => m[1]);
}

/**
 * `#cloud-config` user-data that makes the test guest run `script` (sh) in the background
 * at boot. The script travels base64-encoded in short runcmd lines: the seed's YAML folds
 * long lines and would quote special characters, neither of which the guest's small
 * cloud-config reader undoes. A line stays well under the YAML writer's 80 columns ("  - " and
 * the command around a 40-character chunk: 66; 56-character chunks were folded).
 */
export function scriptUserData(script: string): string {
  const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(script)));
  const lines = ["#cloud-config", "runcmd:"];
  for (let i = 0; i < b64.length; i += 40) {
    lines.push(`  - echo -n ${b64.slice(i, i + 40)} >>/run/nv.b64`);
  }
  lines.push("  - base64 -d /run/nv.b64 >/run/nv.sh", "  - sh /run/nv.sh &");
  return lines.join("\n") + "\n";
}

/** `novactl image import NAME --kernel … --initrd … --cmdline …` arguments for the test guest. */
export function guestImportArgs(guest: TestGuest, name: string): string[] {
  return [
    "image",
    "import",
    name,
    "--kernel",
    guest.kernel,
    "--initrd",
    guest.initrd,
    "--cmdline",
    guest.cmdline,
  ];
}

/** The end of a VM's serial console through the API ("" while it has none). */
export async function fetchConsole(
  url: string,
  token: string,
  vm: string,
  bytes = 1 << 20,
): Promise<string> {
  const res = await clusterFetch(`${url}/api/v1/vms/${vm}/console?bytes=${bytes}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  return res.ok ? await res.text() : (await res.body?.cancel(), "");
}
