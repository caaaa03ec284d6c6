/**
 * Pages of every list the API answers: `?limit=N&continue=TOKEN`, answered as
 * `{"<plural>": [...], "continue"?: "<token>"}`.
 *
 * Pages are cut by key, not by offset: a token holds the key of the page's
 * last item and the next page starts after it, so items created or deleted
 * between two pages do not shift the rest (an item is never listed twice, and
 * one present all along is never skipped). The token names its list, so one
 * list's token is refused by another. It is opaque to clients: base64url JSON.
 *
 * @module
 */
import { z } from "zod";
import { ValidationError } from "../core/errors/mod.ts";

/** The largest page any list answers (the audit log allows more: see its route). */
export const MAX_PAGE = 1000;

/** A sort key: a name, a number, or a tuple of them compared left to right. */
export type PageKey = string | number | readonly (string | number)[];

/** `?limit=&continue=` with `max` as the largest limit. */
export function pageQueryOf(max: number) {
  return z.object({
    limit: z.string().optional().refine(
      (v) => v === undefined || (/^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= max),
      `a whole number from 1 to ${max}`,
    ).describe(`page size, 1 to ${max}; the answer has \`continue\` when more follow`),
    continue: z.string().optional().describe(
      "the previous page's `continue`: the page after it (same filters)",
    ),
  });
}

/** The page parameters every list takes; routes with filters extend it. */
export const pageQuery = pageQueryOf(MAX_PAGE);

/** What a route parsed from {@link pageQuery} (or an extension of it). */
export interface PageParams {
  limit?: string;
  continue?: string;
}

/** One page of a list and, when more follow, the token of the next. */
export interface Page<T> {
  items: T[];
  continue?: string;
}

/** How a list is ordered and paged. */
export interface ListSpec<T> {
  /** The list's name, written into its tokens (a token of another list is refused). */
  list: string;
  /** Each item's key; keys are unique within the list. */
  key: (item: T) => PageKey;
  /** Newest first and the like; default ascending. */
  order?: "asc" | "desc";
  /** The page size without `?limit`; default: the whole list in one page. */
  defaultLimit?: number;
}

/** A page's size: `?limit`, else the list's default (Infinity: no limit). */
export function limitOf(q: PageParams, defaultLimit = Infinity): number {
  return q.limit === undefined ? defaultLimit : Number(q.limit);
}

/** The token that continues after `key` in list `list`. */
export function continueToken(list: string, key: PageKey): string {
  const bytes = new TextEncoder().encode(JSON.stringify({ l: list, k: key }));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
}

/**
 * The key a `continue` token of list `list` carries, or undefined without one.
 * `shape` checks the key's form (a string, a tuple of a number and a string, ...).
 *
 * @throws {ValidationError} naming `continue`: a token this API did not give out for this list
 * @example
 * ```ts
 * afterOf("vms", continueToken("vms", "web1"), isString); // "web1"
 * afterOf("images", continueToken("vms", "web1"), isString); // 400: a token of the vms list
 * ```
 */
export function afterOf<K extends PageKey>(
  list: string,
  token: string | undefined,
  shape: (key: unknown) => key is K,
): K | undefined {
  if (token === undefined || token === "") return undefined;
  let decoded: unknown;
  try {
    const b64 = token.replaceAll("-", "+").replaceAll("_", "/");
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    decoded = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw ValidationError.field("continue", "not a token this API gave out");
  }
  const { l, k } = (decoded ?? {}) as { l?: unknown; k?: unknown };
  if (typeof l === "string" && l !== list) {
    throw ValidationError.field("continue", `a token of the ${l} list, not of ${list}`);
  }
  if (l !== list || !shape(k)) {
    throw ValidationError.field("continue", "not a token this API gave out");
  }
  return k;
}

/** A name key, for {@link afterOf}. */
export const isString = (k: unknown): k is string => typeof k === "string";
/** A numeric key (a version, an id), for {@link afterOf}. */
export const isNumber = (k: unknown): k is number => typeof k === "number" && Number.isFinite(k);
/** Any key {@link compareKeys} orders, for {@link afterOf}. */
export const isKey = (k: unknown): k is PageKey =>
  isString(k) || isNumber(k) ||
  (Array.isArray(k) && k.length > 0 && k.every((p) => isString(p) || isNumber(p)));

/** Orders keys: numbers numerically, strings by UTF-16 code unit (as SQLite's BINARY), tuples left to right. */
export function compareKeys(a: PageKey, b: PageKey): number {
  if (Array.isArray(a) || Array.isArray(b)) {
    const x = (Array.isArray(a) ? a : [a]) as readonly (string | number)[];
    const y = (Array.isArray(b) ? b : [b]) as readonly (string | number)[];
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      const c = compareKeys(x[i], y[i]);
      if (c !== 0) return c;
    }
    return x.length - y.length;
  }
  if (typeof a === "number" && typeof b === "number") return a - b;
  // A number sorts before a string (a token's key of the wrong type only meets such a mix).
  if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The page of `items` that `q` asks for, in the list's order: the items after
 * the token's key, at most `?limit` of them, and the next token when more follow.
 */
export function paginate<T>(items: readonly T[], q: PageParams, spec: ListSpec<T>): Page<T> {
  const sign = spec.order === "desc" ? -1 : 1;
  const after = afterOf(spec.list, q.continue, isKey);
  const limit = limitOf(q, spec.defaultLimit);
  const keyed = items.map((item) => ({ item, key: spec.key(item) }));
  keyed.sort((a, b) => sign * compareKeys(a.key, b.key));
  const rest = after === undefined
    ? keyed
    : keyed.filter((e) => sign * compareKeys(e.key, after) > 0);
  const page = rest.slice(0, limit);
  if (rest.length <= limit) return { items: page.map((e) => e.item) };
  return {
    items: page.map((e) => e.item),
    continue: continueToken(spec.list, page[page.length - 1].key),
  };
}

/**
 * The page of rows a store read in the list's order after the token's key, asked for one
 * more than `limit` (so the answer knows whether another page follows without reading it).
 */
export function pageOfRead<T>(
  rows: readonly T[],
  limit: number,
  spec: Pick<ListSpec<T>, "list" | "key">,
): Page<T> {
  if (rows.length <= limit) return { items: [...rows] };
  const items = rows.slice(0, limit);
  return { items, continue: continueToken(spec.list, spec.key(items[items.length - 1])) };
}

/** The page with each item shown as `view` shows it (views are built for one page only). */
export function mapPage<T, U>(page: Page<T>, view: (item: T) => U): Page<U> {
  return { ...page, items: page.items.map(view) };
}

/** A list's answer: `{ [plural]: items, continue? }`. */
export function listBody<K extends string, T>(
  plural: K,
  page: Page<T>,
): { [k in K]: T[] } & { continue?: string } {
  const body = { [plural]: page.items } as { [k in K]: T[] } & { continue?: string };
  if (page.continue !== undefined) body.continue = page.continue;
  return body;
}

/** Pages `items` and shapes the answer in one step (the common case). */
export function pagedList<K extends string, T>(
  plural: K,
  items: readonly T[],
  q: PageParams,
  spec: ListSpec<T>,
): { [k in K]: T[] } & { continue?: string } {
  return listBody(plural, paginate(items, q, spec));
}
