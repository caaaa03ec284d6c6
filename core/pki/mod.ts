/**
 * Cluster PKI: the cluster CA (created at bootstrap), node keys and CSRs,
 * CA signing of a joiner's CSR, SHA-256 fingerprints, PEM helpers, and the
 * node's TLS files in its data dir (`ca.crt`, `tls/node.crt`, `tls/node.key`).
 *
 * Trust never rests on the CA alone: every member's certificate fingerprint is
 * recorded in replicated state at join, and a peer is only taken to be member
 * X when its certificate is CA-signed, its CN is X, and its fingerprint is the
 * one recorded for X (and not revoked). See api/server.ts and api/auth.ts.
 *
 * @module
 */
export * from "./ca.ts";
export * from "./files.ts";
export * from "./join_token.ts";
