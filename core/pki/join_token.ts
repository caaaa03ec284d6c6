/**
 * Join tokens carry the CA's fingerprint, so a joiner verifies the cluster it
 * joins before sending anything (as kubeadm's `--discovery-token-ca-cert-hash`):
 * `nvj_<secret>.<sha256 of the CA certificate's DER, hex>`.
 */
import { ValidationError } from "../errors/mod.ts";

export const JOIN_TOKEN_PREFIX = "nvj_";

/** The secret part (what the cluster stores hashed) and the pinned CA fingerprint. */
export interface ParsedJoinToken {
  secret: string;
  caFingerprint: string;
}

/** Joins a token's secret and the CA fingerprint into the form handed to operators. */
export function formatJoinToken(secret: string, caFingerprint: string): string {
  return `${secret}.${caFingerprint}`;
}

/**
 * Splits a join token.
 *
 * @throws {ValidationError} on a token without a 64-hex-digit CA fingerprint
 */
export function parseJoinToken(token: string): ParsedJoinToken {
  const t = token.trim();
  const dot = t.lastIndexOf(".");
  const fp = dot > 0 ? t.slice(dot + 1).toLowerCase() : "";
  if (!t.startsWith(JOIN_TOKEN_PREFIX) || !/^[0-9a-f]{64}$/.test(fp)) {
    throw ValidationError.field(
      "token",
      "not a join token (expected nvj_<secret>.<CA fingerprint>, as `cluster token create` prints)",
    );
  }
  return { secret: t.slice(0, dot), caFingerprint: fp };
}
