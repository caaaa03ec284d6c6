import { assert, assertEquals, assertThrows } from "../testing/assert.ts";
import { ConflictError, ValidationError } from "../errors/mod.ts";
import { formatIpv4, parseCidr, parseIpv4 } from "./cidr.ts";
import { allocateIp, checkStaticIp, defaultGateway, parseReservedRanges } from "./ipam.ts";

/** Asserts `fn` throws a ValidationError about exactly `field`, its message matching `re`. */
function assertFieldError(fn: () => unknown, field: string, re: RegExp): void {
  const err = assertThrows(fn, ValidationError);
  assertEquals(err.issues.map((i) => i.field), [field]);
  assert(re.test(err.message), `"${err.message}" does not match ${re}`);
}

const ip = (text: string) => parseIpv4(text);
const net24 = parseCidr("10.0.0.0/24");

Deno.test("defaultGateway is the first host", () => {
  assertEquals(formatIpv4(defaultGateway(net24)), "10.0.0.1");
  assertEquals(formatIpv4(defaultGateway(parseCidr("172.16.8.0/22"))), "172.16.8.1");
});

Deno.test("checkStaticIp accepts a free host and refuses every other case, naming the field", () => {
  const usage = {
    gateway: ip("10.0.0.1"),
    taken: new Set([ip("10.0.0.50")]),
    reserved: [{ from: ip("10.0.0.2"), to: ip("10.0.0.9") }],
  };
  checkStaticIp(net24, ip("10.0.0.10"), usage);
  checkStaticIp(net24, ip("10.0.0.254"), usage);

  const check = (text: string) => () => checkStaticIp(net24, ip(text), usage, "nics[0].ip");
  assertFieldError(
    check("10.0.1.5"),
    "nics[0].ip",
    /10\.0\.1\.5 is outside network 10\.0\.0\.0\/24/,
  );
  assertFieldError(check("9.255.255.255"), "nics[0].ip", /outside/);
  assertFieldError(check("10.0.0.0"), "nics[0].ip", /10\.0\.0\.0 is the network address/);
  assertFieldError(check("10.0.0.255"), "nics[0].ip", /10\.0\.0\.255 is the broadcast address/);
  assertFieldError(check("10.0.0.1"), "nics[0].ip", /10\.0\.0\.1 is the gateway/);
  assertFieldError(
    check("10.0.0.5"),
    "nics[0].ip",
    /10\.0\.0\.5 is in the reserved range 10\.0\.0\.2-10\.0\.0\.9/,
  );
  assertFieldError(check("10.0.0.9"), "nics[0].ip", /reserved range/);
  assertFieldError(() => checkStaticIp(net24, ip("10.0.0.0"), usage), "ip", /network address/);

  const taken = assertThrows(check("10.0.0.50"), ConflictError);
  assertEquals(
    taken.message,
    "nics[0].ip: address 10.0.0.50 is already taken in network 10.0.0.0/24",
  );
  const named = assertThrows(
    () => checkStaticIp(net24, ip("10.0.0.50"), { ...usage, network: "prod" }),
    ConflictError,
  );
  assertEquals(
    named.message,
    'ip: address 10.0.0.50 is already taken in network "prod" (10.0.0.0/24)',
  );
  assertEquals(named.details, { field: "ip", address: "10.0.0.50", network: "prod" });
});

Deno.test("allocateIp gives the lowest host, skipping gateway, reserved ranges and taken addresses", () => {
  const none = { gateway: ip("10.0.0.1"), taken: new Set<number>(), reserved: [] };
  assertEquals(formatIpv4(allocateIp(net24, none)), "10.0.0.2");

  const usage = {
    gateway: ip("10.0.0.1"),
    // Unsorted and overlapping on purpose: the order given must not matter.
    reserved: [
      { from: ip("10.0.0.12"), to: ip("10.0.0.13") },
      { from: ip("10.0.0.2"), to: ip("10.0.0.9") },
      { from: ip("10.0.0.4"), to: ip("10.0.0.10") },
    ],
    taken: new Set([ip("10.0.0.11"), ip("10.0.0.14"), ip("10.0.0.16")]),
  };
  assertEquals(formatIpv4(allocateIp(net24, usage)), "10.0.0.15");

  const gatewayElsewhere = { ...none, gateway: ip("10.0.0.254"), taken: new Set([ip("10.0.0.1")]) };
  assertEquals(formatIpv4(allocateIp(net24, gatewayElsewhere)), "10.0.0.2");
});

Deno.test("allocateIp never hands out the broadcast address and reports a full network", () => {
  const slash30 = parseCidr("192.168.9.0/30");
  const gateway = defaultGateway(slash30);
  assertEquals(
    formatIpv4(allocateIp(slash30, { gateway, taken: new Set(), reserved: [] })),
    "192.168.9.2",
  );
  const full = { gateway, taken: new Set([ip("192.168.9.2")]), reserved: [] };
  const err = assertThrows(() => allocateIp(slash30, full), ConflictError);
  assertEquals(err.message, "network 192.168.9.0/30 has no free address");
  const named = assertThrows(() => allocateIp(slash30, { ...full, network: "lab" }), ConflictError);
  assertEquals(named.message, 'network "lab" (192.168.9.0/30) has no free address');

  // A reserved range reaching past the last host must not carry the walk past the block.
  const reservedToEnd = {
    gateway,
    taken: new Set<number>(),
    reserved: [{ from: ip("192.168.9.2"), to: ip("192.168.9.3") }],
  };
  assertThrows(() => allocateIp(slash30, reservedToEnd), ConflictError);
});

Deno.test("allocateIp in a /16 with 60,000 addresses taken finds the first free one", () => {
  const net16 = parseCidr("10.20.0.0/16");
  const gateway = defaultGateway(net16);
  const taken = new Set<number>();
  for (let a = gateway + 1; taken.size < 60_000; a++) taken.add(a);
  const got = allocateIp(net16, {
    gateway,
    taken,
    reserved: [{ from: ip("10.20.100.0"), to: ip("10.20.100.255") }],
  });
  // 10.20.0.2 + 60,000 = 10.20.234.98, beyond the reserved /24, which the taken run covered.
  assertEquals(formatIpv4(got), "10.20.234.98");
  assert(!taken.has(got));
});

Deno.test("parseReservedRanges parses ranges and single addresses, sorted by start", () => {
  assertEquals(
    parseReservedRanges(["10.0.0.100-10.0.0.199", "10.0.0.2-10.0.0.9", "10.0.0.50"], net24),
    [
      { from: ip("10.0.0.2"), to: ip("10.0.0.9") },
      { from: ip("10.0.0.50"), to: ip("10.0.0.50") },
      { from: ip("10.0.0.100"), to: ip("10.0.0.199") },
    ],
  );
  assertEquals(parseReservedRanges([], net24), []);
});

Deno.test("parseReservedRanges refuses bad ranges, naming the field and index", () => {
  const parse = (...texts: string[]) => () => parseReservedRanges(texts, net24, "dhcp");
  assertFieldError(parse("10.0.0.2-10.0.0.9", "x"), "dhcp[1]", /not an IPv4 address/);
  assertFieldError(parse("10.0.0.2-10.0.0.3-10.0.0.4"), "dhcp[0]", /not a range/);
  assertFieldError(parse("10.0.0.2-"), "dhcp[0]", /not an IPv4 address/);
  assertFieldError(parse("10.0.0.9-10.0.0.2"), "dhcp[0]", /ends before it starts/);
  assertFieldError(parse("10.0.0.200-10.0.1.5"), "dhcp[0]", /not inside 10\.0\.0\.0\/24/);
  assertFieldError(parse("10.0.1.1"), "dhcp[0]", /not inside/);
  assertFieldError(
    parse("10.0.0.20-10.0.0.30", "10.0.0.2-10.0.0.5", "10.0.0.30-10.0.0.40"),
    "dhcp[2]",
    /10\.0\.0\.30-10\.0\.0\.40 overlaps dhcp\[0\] \(10\.0\.0\.20-10\.0\.0\.30\)/,
  );
  assertFieldError(
    parse("10.0.0.20-10.0.0.30", "10.0.0.5-10.0.0.20"),
    "dhcp[1]",
    /overlaps dhcp\[0\]/,
  );
  assertFieldError(() => parseReservedRanges(["1.2.3"], net24), "reserved[0]", /IPv4/);
});
