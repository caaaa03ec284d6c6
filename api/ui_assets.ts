/**
 * The web dashboard's static files at `/ui/` (built by `deno task build:ui` into ui/dist,
 * see ui/build.ts). They are public: they hold no data, and every byte of data the page
 * shows comes through the authenticated API.
 *
 * - `/ui/assets/NAME`: content-hashed scripts and styles, cached for a year (`immutable`),
 *   sent from the precompressed `NAME.gz` to clients that accept gzip.
 * - any other path under `/ui/`: `index.html` (the page routes in the browser), never
 *   cached, so a new build is picked up on the next load.
 * - without a build: 503 saying how to make one, rather than a blank page.
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Env } from "./context.ts";

/** ui/dist beside this checkout; NOVACTL_UI_DIR points elsewhere (a packaged build). */
export function defaultUiDir(): string {
  return Deno.env.get("NOVACTL_UI_DIR") ||
    fileURLToPath(new URL("../ui/dist", import.meta.url));
}

const TYPES: Record<string, string> = {
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  html: "text/html; charset=utf-8",
  txt: "text/plain; charset=utf-8",
  json: "application/json",
  svg: "image/svg+xml",
  woff: "font/woff",
  woff2: "font/woff2",
  ttf: "font/ttf",
};

/** Asset names as esbuild writes them: no separators, so no way out of the folder. */
const ASSET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

const NOT_BUILT = "The dashboard is not built on this node. Run `deno task build:ui` " +
  "(scripts/setup.sh does) in the novactl checkout, then reload.\n";

/**
 * The routes under `/ui` (mount with `app.route("/ui", uiRoutes())`).
 * @param dir the built dashboard (default {@link defaultUiDir})
 */
export function uiRoutes(dir: string = defaultUiDir()): Hono<Env> {
  const app = new Hono<Env>();
  app.get("/", (c) => index(c, dir));
  app.get("/assets/:file", async (c) => {
    const file = c.req.param("file");
    if (!ASSET_NAME.test(file)) return c.text("not found\n", 404);
    const path = join(dir, "assets", file);
    const headers: Record<string, string> = {
      "content-type": TYPES[file.slice(file.lastIndexOf(".") + 1)] ?? "application/octet-stream",
      "cache-control": "public, max-age=31536000, immutable",
      "vary": "accept-encoding",
      "x-content-type-options": "nosniff",
    };
    if (acceptsGzip(c)) {
      const gz = await readOrNull(path + ".gz");
      if (gz) return c.body(gz, 200, { ...headers, "content-encoding": "gzip" });
    }
    const raw = await readOrNull(path);
    if (raw) return c.body(raw, 200, headers);
    if (!(await exists(dir))) return c.text(NOT_BUILT, 503);
    return c.text("not found\n", 404);
  });
  // The page routes in the browser (/ui/vms/NAME, ...): every other path gets the page.
  app.get("/*", (c) => index(c, dir));
  return app;
}

async function index(c: Context<Env>, dir: string): Promise<Response> {
  const html = await readOrNull(join(dir, "index.html"));
  if (!html) return c.text(NOT_BUILT, 503, { "cache-control": "no-store" });
  return c.body(html, 200, {
    "content-type": TYPES.html,
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
  });
}

function acceptsGzip(c: Context<Env>): boolean {
  return /(^|,)\s*gzip\s*(;\s*q=(?!0(\.0*)?\s*($|,))[\d.]+)?\s*($|,)/i.test(
    c.req.header("accept-encoding") ?? "",
  );
}

async function readOrNull(path: string): Promise<Uint8Array<ArrayBuffer> | null> {
  try {
    return await Deno.readFile(path) as Uint8Array<ArrayBuffer>;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.IsADirectory) return null;
    throw e;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
