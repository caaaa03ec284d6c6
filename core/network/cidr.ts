/**
 * IPv4 addresses and CIDR blocks as plain uint32 numbers. Pure and
 * deterministic: the replicated state machine calls these, so every node must
 * reach the same answer for the same input.
 */
import { ValidationError } from "../errors/mod.ts";

/** An IPv4 block: its network address (uint32), prefix length, and canonical text. */
export interface Cidr {
  /** The network address as an unsigned 32-bit integer; its host bits are zero. */
  readonly network: number;
  /** The prefix length, {@link MIN_PREFIX}..{@link MAX_PREFIX}. */
  readonly prefix: number;
  /** The canonical form, "a.b.c.d/n". */
  readonly text: string;
}

/** The widest prefix a VM network may have: /8, 16,777,216 addresses. */
export const MIN_PREFIX = 8;

/** The narrowest prefix a VM network may have: /30, a gateway and one host. */
export const MAX_PREFIX = 30;

// Octets are plain decimal; "0" is the only octet that may start with a zero.
const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const PREFIX_RE = /^\d{1,2}$/;

/**
 * Parses a dotted-quad IPv4 address into an unsigned 32-bit integer.
 *
 * @throws ValidationError naming `field` when the text is not four decimal
 * octets 0..255 without leading zeros.
 */
export function parseIpv4(text: string, field = "ip"): number {
  if (typeof text !== "string") throw ValidationError.field(field, "not an IPv4 address");
  const m = IPV4_RE.exec(text);
  if (!m) throw ValidationError.field(field, `"${text}" is not an IPv4 address (a.b.c.d)`);
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = m[i];
    if (octet.length > 1 && octet[0] === "0") {
      // inet_aton and some tools read "010" as octal 8, others as decimal 10:
      // refusing it keeps one address from meaning two things.
      throw ValidationError.field(
        field,
        `"${text}" has an octet with a leading zero ("${octet}"), which some tools read as octal`,
      );
    }
    const v = Number(octet);
    if (v > 255) {
      throw ValidationError.field(field, `"${text}" has an octet above 255 ("${octet}")`);
    }
    n = n * 256 + v;
  }
  return n;
}

/**
 * Formats an unsigned 32-bit integer as a dotted-quad IPv4 address.
 *
 * @throws RangeError when `n` is not an integer 0..2^32-1 (a caller's bug, not user input).
 */
export function formatIpv4(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new RangeError(`${n} is not an IPv4 address (an integer 0..4294967295)`);
  }
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** The netmask of a prefix length 0..32 as a uint32. */
function maskOf(prefix: number): number {
  // A shift by 32 is a shift by 0 in JavaScript, so /0 needs its own case.
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parses "a.b.c.d/n" into a {@link Cidr}.
 *
 * @throws ValidationError naming `field` for malformed text, a bad address, a
 * prefix outside /8../30, or an address with host bits set.
 */
export function parseCidr(text: string, field = "subnet"): Cidr {
  if (typeof text !== "string") throw ValidationError.field(field, "not a CIDR block");
  const slash = text.indexOf("/");
  if (slash < 0 || slash !== text.lastIndexOf("/")) {
    throw ValidationError.field(field, `"${text}" is not a CIDR block (a.b.c.d/n)`);
  }
  const addrText = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  if (!PREFIX_RE.test(prefixText) || (prefixText.length > 1 && prefixText[0] === "0")) {
    throw ValidationError.field(field, `"${text}" has no valid prefix length after "/"`);
  }
  const addr = parseIpv4(addrText, field);
  const prefix = Number(prefixText);
  if (prefix < MIN_PREFIX || prefix > MAX_PREFIX) {
    throw ValidationError.field(
      field,
      `prefix /${prefix} is outside /${MIN_PREFIX}../${MAX_PREFIX}: a VM network needs room for ` +
        `a gateway and at least one host besides its network and broadcast addresses ` +
        `(so /${MAX_PREFIX} at most), and /${MIN_PREFIX} (16,777,216 addresses) is the widest`,
    );
  }
  const network = (addr & maskOf(prefix)) >>> 0;
  if (network !== addr) {
    throw ValidationError.field(
      field,
      `${text} has host bits set; did you mean ${formatIpv4(network)}/${prefix}?`,
    );
  }
  return { network, prefix, text: `${formatIpv4(network)}/${prefix}` };
}

/** The number of addresses in `cidr`, network and broadcast addresses included. */
export function size(cidr: Cidr): number {
  return 2 ** (32 - cidr.prefix);
}

/** The broadcast address of `cidr`: its last address. */
export function broadcast(cidr: Cidr): number {
  return cidr.network + size(cidr) - 1;
}

/** The lowest host address of `cidr` (the one after the network address). */
export function firstHost(cidr: Cidr): number {
  return cidr.network + 1;
}

/** The highest host address of `cidr` (the one before the broadcast address). */
export function lastHost(cidr: Cidr): number {
  return cidr.network + size(cidr) - 2;
}

/** Whether `ip` (a uint32) lies in `cidr`, network and broadcast addresses included. */
export function contains(cidr: Cidr, ip: number): boolean {
  return Number.isInteger(ip) && ip >= cidr.network && ip <= broadcast(cidr);
}

/**
 * Whether two blocks share any address. Aligned blocks never partly overlap:
 * either they are disjoint or the wider one contains the narrower.
 */
export function overlaps(a: Cidr, b: Cidr): boolean {
  const mask = maskOf(Math.min(a.prefix, b.prefix));
  return ((a.network & mask) >>> 0) === ((b.network & mask) >>> 0);
}
