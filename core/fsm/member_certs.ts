/**
 * Member identities in replicated state: each member's certificate fingerprint
 * (recorded at bootstrap or join), the hash of its per-node credential (used
 * instead of a certificate only when a node serves plain HTTP on loopback),
 * the fingerprints of removed members (revoked, refused forever), and the
 * cluster CA (so whichever member leads can sign a joiner's CSR).
 *
 * The CA key lives here rather than on one node so joins survive the loss of
 * the bootstrap node. It never leaves through the API: no route reads this
 * table, and peers receive it only inside Raft snapshots over TLS.
 * Holding it does not make one a member: a peer is member X only when its
 * certificate's fingerprint equals the one recorded for X here.
 */
import type { StatementSync } from "node:sqlite";
import type { Resource, Store } from "./store.ts";

const TABLES = [
  {
    name: "member_certs",
    ddl: `CREATE TABLE IF NOT EXISTS member_certs (name TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL, credential_hash TEXT NOT NULL, added_at INTEGER NOT NULL);`,
  },
  {
    name: "revoked_certs",
    ddl: `CREATE TABLE IF NOT EXISTS revoked_certs (fingerprint TEXT PRIMARY KEY,
  name TEXT NOT NULL, revoked_at INTEGER NOT NULL);`,
  },
  {
    name: "cluster_ca",
    ddl: `CREATE TABLE IF NOT EXISTS cluster_ca (id INTEGER PRIMARY KEY CHECK (id = 1),
  cert_pem TEXT NOT NULL, key_pem TEXT NOT NULL);`,
  },
];

/**
 * Member identities: written by conf-change entries (members.ts) and cluster.init
 * (cluster.ts), so no command appliers of their own.
 */
export const resource: Resource = { tables: TABLES, appliers: {} };

/** The statement maker of a {@link Store}, as the functions below take it. */
export const sqlOf = (s: Store): Sql => (text) => s.sql(text);

/** What a member is recognised by. */
export interface MemberCert {
  name: string;
  /** SHA-256 of its certificate's DER, lowercase hex. */
  fingerprint: string;
  /** SHA-256 (hex) of its per-node credential (plain-HTTP loopback mode only). */
  credentialHash: string;
}

/** Identity material carried by `cluster.init` and by an addLearner's context. */
export interface MemberIdentitySeed {
  fingerprint?: string;
  credentialHash?: string;
}

type Sql = (text: string) => StatementSync;

/** Records (or replaces) a member's identity; a member without one cannot authenticate. */
export function recordMemberCert(
  sql: Sql,
  name: string,
  seed: MemberIdentitySeed,
  at: number,
): void {
  if (!seed.fingerprint && !seed.credentialHash) return;
  sql(
    "INSERT OR REPLACE INTO member_certs (name, fingerprint, credential_hash, added_at) VALUES (?, ?, ?, ?)",
  ).run(name, seed.fingerprint ?? "", seed.credentialHash ?? "", at);
}

/** A removed member's certificate is revoked for good, its identity forgotten. */
export function revokeMemberCert(sql: Sql, name: string, at: number): void {
  const cert = memberCert(sql, name);
  if (!cert) return;
  if (cert.fingerprint) {
    sql("INSERT OR REPLACE INTO revoked_certs (fingerprint, name, revoked_at) VALUES (?, ?, ?)")
      .run(cert.fingerprint, name, at);
  }
  sql("DELETE FROM member_certs WHERE name = ?").run(name);
}

export function memberCert(sql: Sql, name: string): MemberCert | null {
  const r = sql("SELECT name, fingerprint, credential_hash FROM member_certs WHERE name = ?")
    .get(name) as { name: string; fingerprint: string; credential_hash: string } | undefined;
  return r ? { name: r.name, fingerprint: r.fingerprint, credentialHash: r.credential_hash } : null;
}

export function memberCerts(sql: Sql): MemberCert[] {
  return (sql("SELECT name, fingerprint, credential_hash FROM member_certs ORDER BY name")
    .all() as { name: string; fingerprint: string; credential_hash: string }[])
    .map((r) => ({ name: r.name, fingerprint: r.fingerprint, credentialHash: r.credential_hash }));
}

/** The member name a revoked fingerprint belonged to, or null. */
export function revokedCert(sql: Sql, fingerprint: string): string | null {
  const r = sql("SELECT name FROM revoked_certs WHERE fingerprint = ?").get(fingerprint) as
    | { name: string }
    | undefined;
  return r?.name ?? null;
}

export function setClusterCa(sql: Sql, ca: { certPem: string; keyPem: string }): void {
  sql("INSERT OR REPLACE INTO cluster_ca (id, cert_pem, key_pem) VALUES (1, ?, ?)")
    .run(ca.certPem, ca.keyPem);
}

export function clusterCa(sql: Sql): { certPem: string; keyPem: string } | null {
  const r = sql("SELECT cert_pem, key_pem FROM cluster_ca WHERE id = 1").get() as
    | { cert_pem: string; key_pem: string }
    | undefined;
  return r ? { certPem: r.cert_pem, keyPem: r.key_pem } : null;
}
