/** API tokens: stored by the SHA-256 of the secret, with a name and a role. */
import type { Command, Role } from "./commands.ts";
import { type Applied, applied, type CacheKey, type Resource, type Store } from "./store.ts";

/** Who a token authenticates. */
export interface Principal {
  name: string;
  role: Role;
}

const TABLE = {
  name: "api_tokens",
  ddl:
    `CREATE TABLE IF NOT EXISTS api_tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, created_at INTEGER NOT NULL);`,
};

/** Every API request authenticates, so known tokens are cached (cleared when tokens change). */
const BY_HASH: CacheKey<Map<string, Principal>> = { init: () => new Map() };

/** The principal of the token whose secret hashes to `hash`, or null. */
export function byHash(s: Store, hash: string): Principal | null {
  const cache = s.cache(BY_HASH);
  const cached = cache.get(hash);
  if (cached) return cached;
  const row = s.sql("SELECT name, role FROM api_tokens WHERE hash = ?").get(hash) as
    | { name: string; role: Role }
    | undefined;
  if (!row) return null;
  const principal = { name: row.name, role: row.role };
  cache.set(hash, principal);
  return principal;
}

/** Stores the bootstrap admin token of a new cluster. */
export function bootstrap(s: Store, hash: string, at: number): void {
  s.cache(BY_HASH).clear();
  s.sql(
    "INSERT OR REPLACE INTO api_tokens (hash, name, role, created_at) VALUES (?, 'admin', 'admin', ?)",
  ).run(hash, at);
}

function create(s: Store, c: Extract<Command, { op: "apiToken.create" }>): Applied {
  s.cache(BY_HASH).clear();
  s.sql("INSERT INTO api_tokens (hash, name, role, created_at) VALUES (?, ?, ?, ?)")
    .run(c.hash, c.name, c.role, c.at);
  return applied({ name: c.name, role: c.role }, { resource: "apiToken", name: c.name });
}

/** API tokens. */
export const resource: Resource<"apiToken.create"> = {
  tables: [TABLE],
  appliers: { "apiToken.create": create },
};
