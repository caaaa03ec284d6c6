import { assertEquals } from "../../core/testing/assert.ts";
import { parseDhcpMessages } from "./dhcp_watch.ts";

// `tcpdump -i any -n -tt -v` of a DISCOVER and OVN's ACK (trimmed), then a packet cut short.
const SAMPLE =
  `1764732000.012345 nt0123456789a0 In  IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 328)
    0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 0a:6e:76:00:00:01, length 300, xid 0x1, Flags [none]
	  Client-Ethernet-Address 0a:6e:76:00:00:01
	  Vendor-rfc1048 Extensions
	    Magic Cookie 0x63825363
	    DHCP-Message (53), length 1: Discover
1764732000.5 nt0123456789a0 Out IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 300)
    10.95.0.1.67 > 10.95.0.2.68: BOOTP/DHCP, Reply, length 272, xid 0x1, Flags [none]
	  Your-IP 10.95.0.2
	  Client-Ethernet-Address 0A:6E:76:00:00:01
	  Vendor-rfc1048 Extensions
	    Magic Cookie 0x63825363
	    DHCP-Message (53), length 1: ACK
1764732001.000001 nt0123456789a0 Out IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 300)
    10.95.0.1.67 > 10.95.0.2.68: BOOTP/DHCP, Reply, length 272, xid 0x1, Flags [none]
	  Your-IP 10.95.0.2
`;

Deno.test("parseDhcpMessages: type, MAC, address and capture time of each whole message", () => {
  assertEquals(parseDhcpMessages(SAMPLE), [
    { atMs: 1764732000012.345, mac: "0a:6e:76:00:00:01", type: "DISCOVER", ip: null },
    { atMs: 1764732000500, mac: "0a:6e:76:00:00:01", type: "ACK", ip: "10.95.0.2" },
  ]);
  assertEquals(parseDhcpMessages(""), []);
});
