import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { ValidationError } from "../errors/mod.ts";
import { MAC_SEQUENCE_SIZE, macFromSequence, NOVACTL_OUI, parseMac } from "./mac.ts";

/** Asserts `fn` throws a ValidationError about exactly `field`, its message matching `re`. */
function assertFieldError(fn: () => unknown, field: string, re: RegExp): void {
  const err = assertThrows(fn, ValidationError);
  assertEquals(err.issues.map((i) => i.field), [field]);
  assert(re.test(err.message), `"${err.message}" does not match ${re}`);
}

Deno.test("the OUI is locally administered, unicast, and spells nv", () => {
  assertEquals(NOVACTL_OUI, "02:6e:76");
  const first = parseInt(NOVACTL_OUI.slice(0, 2), 16);
  assertEquals(first & 0b10, 0b10, "locally administered bit set");
  assertEquals(first & 1, 0, "multicast bit clear");
  assertEquals(String.fromCharCode(0x6e, 0x76), "nv");
});

Deno.test("macFromSequence covers 0..2^24-1 exactly, lowercase and colon separated", () => {
  assertEquals(macFromSequence(0), "02:6e:76:00:00:00");
  assertEquals(macFromSequence(1), "02:6e:76:00:00:01");
  assertEquals(macFromSequence(0xabcdef), "02:6e:76:ab:cd:ef");
  assertEquals(macFromSequence(0x010203), "02:6e:76:01:02:03");
  assertEquals(macFromSequence(2 ** 24 - 1), "02:6e:76:ff:ff:ff");
  assertEquals(MAC_SEQUENCE_SIZE, 2 ** 24);
  for (const bad of [-1, 2 ** 24, 2 ** 32, 1.5, NaN, Infinity]) {
    assertThrows(() => macFromSequence(bad), RangeError);
  }
});

Deno.test("generated MACs are accepted by parseMac unchanged", () => {
  for (const n of [0, 1, 255, 256, 0x7fffff, 2 ** 24 - 1]) {
    assertEquals(parseMac(macFromSequence(n)), macFromSequence(n));
  }
});

Deno.test("parseMac normalises case and dashes to lowercase colons", () => {
  assertEquals(parseMac("52:54:00:AB:cd:EF"), "52:54:00:ab:cd:ef");
  assertEquals(parseMac("52-54-00-AB-CD-EF"), "52:54:00:ab:cd:ef");
  assertEquals(parseMac("02:6e:76:00:00:00"), "02:6e:76:00:00:00");
});

Deno.test("parseMac refuses malformed, multicast and all-zero addresses, naming the field", () => {
  for (
    const bad of [
      "",
      "52:54:00:ab:cd",
      "52:54:00:ab:cd:ef:01",
      "52:54:00:ab:cd:eg",
      "52:54-00:ab:cd:ef",
      "525400abcdef",
      "5254.00ab.cdef",
      "52:54:00:ab:cd:e",
      " 52:54:00:ab:cd:ef",
      "52:54:00:ab:cd:ef\n",
    ]
  ) {
    assertFieldError(() => parseMac(bad, "nics[1].mac"), "nics[1].mac", /not a MAC address/);
  }
  assertFieldError(() => parseMac("01:00:5E:00:00:01"), "mac", /01:00:5e:00:00:01 is a multicast/);
  assertFieldError(() => parseMac("ff-ff-ff-ff-ff-ff"), "mac", /multicast/);
  assertFieldError(() => parseMac("03:6e:76:00:00:00"), "mac", /multicast/);
  assertFieldError(
    () => parseMac("00:00:00:00:00:00", "m"),
    "m",
    /00:00:00:00:00:00 is not a usable NIC address/,
  );
});
