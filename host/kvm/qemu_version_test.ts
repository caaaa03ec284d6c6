import { assert, assertEquals, assertRejects } from "../../core/testing/assert.ts";
import { NovaError } from "../../core/errors/mod.ts";
import { confinementArgs, runAsArgs } from "./confine.ts";
import { atLeast, parseQemuVersion, qemuBinaryVersion } from "./qemu_version.ts";

const USER = { name: "novactl-qemu", uid: 999, gid: 999 };

Deno.test("QEMU's release is read from --version output", () => {
  assertEquals(
    parseQemuVersion(
      "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025",
    ),
    { major: 10, minor: 0, micro: 2 },
  );
  assertEquals(
    parseQemuVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
    { major: 7, minor: 2, micro: 22 },
  );
  assertEquals(parseQemuVersion("QEMU emulator version 9.1\n"), { major: 9, minor: 1, micro: 0 });
  assertEquals(parseQemuVersion("bash: qemu-system-x86_64: command not found"), null);
});

Deno.test("the user QEMU drops to: -runas before 9.1, -run-with user= from 9.1 (10 has no -runas)", () => {
  assertEquals(runAsArgs(USER, { major: 7, minor: 2, micro: 22 }), ["-runas", "novactl-qemu"]);
  assertEquals(runAsArgs(USER, { major: 9, minor: 0, micro: 0 }), ["-runas", "novactl-qemu"]);
  assertEquals(runAsArgs(USER, { major: 9, minor: 1, micro: 0 }), [
    "-run-with",
    "user=novactl-qemu",
  ]);
  assertEquals(runAsArgs(USER, { major: 10, minor: 0, micro: 2 }), [
    "-run-with",
    "user=novactl-qemu",
  ]);
  // Not root: no user option on any release, the filter still on.
  assertEquals(confinementArgs(null, { major: 10, minor: 0, micro: 2 }).slice(0, 2), [
    "-sandbox",
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
  ]);
  assert(atLeast({ major: 10, minor: 0, micro: 0 }, 9, 1));
  assert(!atLeast({ major: 8, minor: 2, micro: 0 }, 9, 1));
});

Deno.test("the chosen spelling is what the QEMU on PATH accepts", async () => {
  const v = await qemuBinaryVersion();
  assert(v.major >= 7, JSON.stringify(v));
  // Asked once: the same promise for the same binary.
  assert(qemuBinaryVersion() === qemuBinaryVersion());
  // QEMU refuses an option it does not know while parsing the command line, before it acts
  // on `-machine help` (which lists machines and exits without starting a VM).
  const out = await new Deno.Command("qemu-system-x86_64", {
    args: [...runAsArgs(USER, v), "-machine", "help"],
    stdout: "null",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert(!/invalid option|Invalid parameter/.test(stderr), stderr);
});

Deno.test("a QEMU that cannot run is a clear 503-class error naming the package", async () => {
  const err = await assertRejects(
    () => qemuBinaryVersion("/nonexistent/qemu-system-x86_64"),
    NovaError,
  );
  assertEquals(err.code, "unavailable");
  assert(err.message.includes("qemu-system-x86"), err.message);
});
