/**
 * Who is on the other end of a request: the client's address and request id,
 * taken from a forwarding peer's headers only when that peer is authenticated
 * (`c.get("peer")`), never from what a client claims.
 */
import type { Context } from "hono";
import type { Env } from "./context.ts";

/** Set by a forwarding node: the address of the client it forwards for. */
export const FORWARDED_FOR_HEADER = "x-novactl-forwarded-for";
/** The request's id: answered to every client; passed on when a node forwards. */
export const REQUEST_ID_HEADER = "x-request-id";
/** Set by a forwarding node: the API the client used, when not REST (`ServerBindings.via`). */
export const VIA_HEADER = "x-novactl-via";

const MAX_ADDRESS_CHARS = 128;
const MAX_REQUEST_ID_CHARS = 128;

/**
 * The client's address: the one a forwarding peer vouches for, else the one
 * the listener recorded (`remoteAddr`, set by peerIdentity), else "unknown"
 * (in-process requests).
 */
export function remoteAddress(c: Context<Env>): string {
  const known = c.get("clientAddress");
  if (known) return known;
  let addr = c.get("remoteAddr") || "unknown";
  if (c.get("peer")) {
    const forwarded = c.req.header(FORWARDED_FOR_HEADER);
    if (forwarded) addr = forwarded.slice(0, MAX_ADDRESS_CHARS);
  }
  // Remembered: once a request is upgraded to a WebSocket its headers cannot be read.
  c.set("clientAddress", addr);
  return addr;
}

/** The id a forwarding peer gave the request, else a new one. */
export function requestIdOf(c: Context<Env>): string {
  const given = c.get("peer") ? c.req.header(REQUEST_ID_HEADER) : undefined;
  return given ? given.slice(0, MAX_REQUEST_ID_CHARS) : crypto.randomUUID();
}

/**
 * Headers a node adds when it forwards a request to another member: the
 * client's address and the request id (both overwrite whatever the client
 * sent). The receiver trusts them only because the forwarder authenticates
 * as a member (signed request, api/auth.ts peerIdentity).
 */
export function forwardingHeaders(c: Context<Env>): Record<string, string> {
  const headers: Record<string, string> = {
    [FORWARDED_FOR_HEADER]: remoteAddress(c),
    [REQUEST_ID_HEADER]: c.get("requestId") ?? requestIdOf(c),
  };
  // Always set: a client's own header must not pass through as if vouched for.
  headers[VIA_HEADER] = viaOf(c) ?? "";
  return headers;
}

/**
 * The API the client used when not REST: what the in-process caller (api/grpc/) bound, or
 * what a forwarding peer vouches for; null for REST.
 */
export function viaOf(c: Context<Env>): string | null {
  const bound = (c.env as { via?: string } | undefined)?.via;
  if (bound) return bound;
  const forwarded = c.get("peer") ? c.req.header(VIA_HEADER) : undefined;
  return forwarded ? forwarded.slice(0, MAX_VIA_CHARS) : null;
}

const MAX_VIA_CHARS = 128;
