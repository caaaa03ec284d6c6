/**
 * A running VM's interactive consoles on its host: the serial console shared by every
 * attached client (./serial.ts) and connections to QEMU's VNC server (./vnc.ts). The API
 * relays both over WebSockets (api/routes/console.ts).
 *
 * @module
 */
export * from "./serial.ts";
export * from "./vnc.ts";
