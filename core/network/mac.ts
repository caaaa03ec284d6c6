/**
 * MAC addresses for VM NICs: generated ones come from a counter under one
 * fixed prefix, so replicas applying the same command pick the same address
 * without any randomness.
 */
import { ValidationError } from "../errors/mod.ts";

/**
 * The prefix of every MAC novactl generates. 0x02 sets the locally
 * administered bit and clears the multicast bit, so it cannot collide with a
 * vendor's burned-in address; 6e:76 is "nv".
 */
export const NOVACTL_OUI = "02:6e:76";

/** How many MACs {@link macFromSequence} can produce: the 24 bits after the prefix. */
export const MAC_SEQUENCE_SIZE = 2 ** 24;

const hex2 = (n: number): string => n.toString(16).padStart(2, "0");

/**
 * The `n`th generated MAC, "02:6e:76:xx:xx:xx" in lowercase.
 *
 * @throws RangeError when `n` is not an integer 0..2^24-1: the caller must
 * detect exhaustion itself rather than wrap around onto a MAC in use.
 */
export function macFromSequence(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n >= MAC_SEQUENCE_SIZE) {
    throw new RangeError(`MAC sequence number ${n} is outside 0..${MAC_SEQUENCE_SIZE - 1}`);
  }
  return `${NOVACTL_OUI}:${hex2(n >>> 16)}:${hex2((n >>> 8) & 0xff)}:${hex2(n & 0xff)}`;
}

// Six hex pairs with one separator used throughout (the backreference), so
// "aa:bb-cc:..." is refused rather than guessed at.
const MAC_RE =
  /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i;

/**
 * Parses a unicast MAC written with colons or dashes, in any case, into the
 * lowercase colon form.
 *
 * @throws ValidationError naming `field` for malformed text, a multicast
 * address (broadcast included), or the all-zero address.
 */
export function parseMac(text: string, field = "mac"): string {
  if (typeof text !== "string") throw ValidationError.field(field, "not a MAC address");
  const m = MAC_RE.exec(text);
  if (!m) {
    throw ValidationError.field(field, `"${text}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  }
  const octets = [m[1], m[3], m[4], m[5], m[6], m[7]].map((o) => o.toLowerCase());
  const mac = octets.join(":");
  if (parseInt(octets[0], 16) & 1) {
    // A NIC must own a unicast address: frames to a group address go to many stations.
    throw ValidationError.field(field, `${mac} is a multicast address, not a NIC's`);
  }
  if (mac === "00:00:00:00:00:00") {
    throw ValidationError.field(field, "00:00:00:00:00:00 is not a usable NIC address");
  }
  return mac;
}
