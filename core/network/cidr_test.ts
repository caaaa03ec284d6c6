import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { ValidationError } from "../errors/mod.ts";
import {
  broadcast,
  contains,
  firstHost,
  formatIpv4,
  lastHost,
  overlaps,
  parseCidr,
  parseIpv4,
  size,
} from "./cidr.ts";

/** Asserts `fn` throws a ValidationError about exactly `field`, its message matching `re`. */
function assertFieldError(fn: () => unknown, field: string, re: RegExp): void {
  const err = assertThrows(fn, ValidationError);
  assertEquals(err.issues.map((i) => i.field), [field]);
  assert(re.test(err.message), `"${err.message}" does not match ${re}`);
}

Deno.test("parseIpv4 and formatIpv4 round-trip the edges of the address space", () => {
  assertEquals(parseIpv4("0.0.0.0"), 0);
  assertEquals(parseIpv4("255.255.255.255"), 0xffffffff);
  assertEquals(parseIpv4("10.1.2.3"), 0x0a010203);
  assertEquals(parseIpv4("192.168.0.1"), 0xc0a80001, "above 2^31 stays positive");
  for (const text of ["0.0.0.0", "1.2.3.4", "128.0.0.1", "255.255.255.255", "10.0.100.0"]) {
    assertEquals(formatIpv4(parseIpv4(text)), text);
  }
});

Deno.test("parseIpv4 refuses malformed text, big octets and leading zeros, naming the field", () => {
  for (const bad of ["", "10.0.0", "10.0.0.0.1", "10.0.0.x", " 10.0.0.1", "10.0.0.1 ", "1..2.3"]) {
    assertFieldError(() => parseIpv4(bad, "spec.ip"), "spec.ip", /not an IPv4 address/);
  }
  assertFieldError(() => parseIpv4("10.0.0.256", "ip"), "ip", /above 255 \("256"\)/);
  assertFieldError(() => parseIpv4("10.0.0.1000", "ip"), "ip", /not an IPv4 address/);
  assertFieldError(() => parseIpv4("10.010.0.1", "gw"), "gw", /leading zero \("010"\)/);
  assertFieldError(() => parseIpv4("00.0.0.1", "gw"), "gw", /leading zero/);
  assertFieldError(() => parseIpv4("١.2.3.4", "ip"), "ip", /not an IPv4 address/);
});

Deno.test("formatIpv4 refuses what is not a uint32", () => {
  for (const bad of [-1, 2 ** 32, 1.5, NaN]) assertThrows(() => formatIpv4(bad), RangeError);
});

Deno.test("parseCidr returns the network, prefix and canonical text", () => {
  assertEquals(parseCidr("10.0.0.0/24"), { network: 0x0a000000, prefix: 24, text: "10.0.0.0/24" });
  assertEquals(parseCidr("192.168.4.0/30"), {
    network: 0xc0a80400,
    prefix: 30,
    text: "192.168.4.0/30",
  });
  assertEquals(parseCidr("10.0.0.0/8").prefix, 8);
  assertEquals(parseCidr("172.16.0.0/12").network, 0xac100000);
});

Deno.test("parseCidr refuses each kind of bad input, naming the field", () => {
  for (
    const bad of ["10.0.0.0", "10.0.0.0/", "10.0.0.0/24/1", "/24", "10.0.0.0/x", "10.0.0.0/-1"]
  ) {
    assertFieldError(() => parseCidr(bad), "subnet", /CIDR|prefix|IPv4/);
  }
  assertFieldError(() => parseCidr("10.0.0.0/024", "net"), "net", /no valid prefix/);
  assertFieldError(() => parseCidr("10.0.0.0/124", "net"), "net", /no valid prefix/);
  assertFieldError(() => parseCidr("10.0.300.0/24", "net"), "net", /above 255/);
  assertFieldError(() => parseCidr("10.00.0.0/24", "net"), "net", /leading zero/);
  assertFieldError(() => parseCidr("10.0.0.0/31", "net"), "net", /\/31 .*room for a gateway/);
  assertFieldError(() => parseCidr("10.0.0.0/32", "net"), "net", /outside \/8\.\.\/30/);
  assertFieldError(() => parseCidr("10.0.0.0/7", "net"), "net", /outside \/8\.\.\/30/);
  assertFieldError(() => parseCidr("0.0.0.0/0", "net"), "net", /outside/);
  assertFieldError(
    () => parseCidr("10.0.0.5/24", "net"),
    "net",
    /10\.0\.0\.5\/24 has host bits set; did you mean 10\.0\.0\.0\/24\?/,
  );
  assertFieldError(() => parseCidr("10.1.0.0/8"), "subnet", /did you mean 10\.0\.0\.0\/8\?/);
});

Deno.test("size, first and last host, broadcast", () => {
  const c24 = parseCidr("10.0.0.0/24");
  assertEquals(size(c24), 256);
  assertEquals(formatIpv4(firstHost(c24)), "10.0.0.1");
  assertEquals(formatIpv4(lastHost(c24)), "10.0.0.254");
  assertEquals(formatIpv4(broadcast(c24)), "10.0.0.255");
  const c30 = parseCidr("192.168.1.4/30");
  assertEquals(size(c30), 4);
  assertEquals([firstHost(c30), lastHost(c30)].map(formatIpv4), ["192.168.1.5", "192.168.1.6"]);
  const high = parseCidr("255.255.255.0/24");
  assertEquals(formatIpv4(broadcast(high)), "255.255.255.255", "no sign flip at the top");
  assertEquals(size(parseCidr("10.0.0.0/8")), 2 ** 24);
});

Deno.test("contains includes the network and broadcast addresses and nothing around them", () => {
  const c = parseCidr("10.0.1.0/24");
  assert(contains(c, parseIpv4("10.0.1.0")));
  assert(contains(c, parseIpv4("10.0.1.77")));
  assert(contains(c, parseIpv4("10.0.1.255")));
  assert(!contains(c, parseIpv4("10.0.0.255")));
  assert(!contains(c, parseIpv4("10.0.2.0")));
  assert(!contains(c, parseIpv4("10.0.1.0") + 0.5));
});

Deno.test("overlaps: containment both ways, identity, adjacency and disjoint blocks", () => {
  const wide = parseCidr("10.0.0.0/16");
  const inside = parseCidr("10.0.42.0/24");
  assert(overlaps(wide, inside), "a /16 overlaps a /24 it contains");
  assert(overlaps(inside, wide), "and the other way round");
  assert(overlaps(inside, inside));
  assert(overlaps(parseCidr("10.0.0.0/8"), parseCidr("10.255.255.252/30")), "the last /30 of a /8");
  assert(!overlaps(parseCidr("10.0.0.0/24"), parseCidr("10.0.1.0/24")), "adjacent /24s");
  assert(!overlaps(parseCidr("10.0.0.0/25"), parseCidr("10.0.0.128/25")), "two halves of a /24");
  assert(!overlaps(wide, parseCidr("10.1.0.0/24")), "just past the /16");
  assert(!overlaps(parseCidr("192.168.0.0/16"), parseCidr("10.0.0.0/8")));
});
