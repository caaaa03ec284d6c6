/** The replicated state machine: commands and their deterministic application into SQLite. */
export * from "./commands.ts";
export * from "./state_machine.ts";
export type { AuditAppend, AuditEntry, AuditInput, AuditQuery } from "./audit.ts";
export type { MemberCert } from "./member_certs.ts";
