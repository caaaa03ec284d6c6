/** Random tokens and their hashes. Only hashes of API and join tokens are replicated. */
import { createHash, randomBytes } from "node:crypto";

export function randomToken(prefix: string, bytes = 24): string {
  return prefix + randomBytes(bytes).toString("base64url");
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
