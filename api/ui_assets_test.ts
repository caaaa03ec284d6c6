/**
 * The dashboard's static files (api/ui_assets.ts) from a made-up build: the page for every
 * path under /ui/, hashed assets gzipped when accepted and cached for a year, no way out of
 * the folder, and a 503 that says what to run when there is no build.
 */
import { gzipSync } from "node:zlib";
import { Hono } from "hono";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { uiRoutes } from "./ui_assets.ts";

async function fakeBuild(): Promise<string> {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/assets`);
  await Deno.writeTextFile(`${dir}/index.html`, "<!doctype html><title>novactl</title>");
  const js = "console.log('dashboard');".repeat(20);
  await Deno.writeTextFile(`${dir}/assets/main-ABC.js`, js);
  await Deno.writeFile(`${dir}/assets/main-ABC.js.gz`, gzipSync(new TextEncoder().encode(js)));
  await Deno.writeTextFile(`${dir}/assets/main-ABC.css`, "body{}");
  return dir;
}

function appOver(dir: string): Hono {
  const app = new Hono();
  app.route("/ui", uiRoutes(dir));
  return app;
}

Deno.test("ui assets: the page for every path, gzip when accepted, long cache for hashed files", async () => {
  const dir = await fakeBuild();
  try {
    const app = appOver(dir);
    for (const path of ["/ui/", "/ui/vms", "/ui/vms/web-1", "/ui/audit"]) {
      const r = await app.request(path);
      assertEquals(r.status, 200, path);
      assertEquals(r.headers.get("content-type"), "text/html; charset=utf-8");
      assertEquals(r.headers.get("cache-control"), "no-cache", "a new build shows on reload");
      assert((await r.text()).includes("<title>novactl</title>"), path);
    }

    const gz = await app.request("/ui/assets/main-ABC.js", {
      headers: { "accept-encoding": "br, gzip;q=0.8, deflate" },
    });
    assertEquals(gz.status, 200);
    assertEquals(gz.headers.get("content-encoding"), "gzip");
    assertEquals(gz.headers.get("content-type"), "text/javascript; charset=utf-8");
    assertEquals(gz.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assertEquals(gz.headers.get("vary"), "accept-encoding");
    const zipped = new Uint8Array(await gz.arrayBuffer());
    assertEquals([zipped[0], zipped[1]], [0x1f, 0x8b], "the .gz file as it is");

    for (const enc of [undefined, "identity", "gzip;q=0"]) {
      const raw = await app.request("/ui/assets/main-ABC.js", {
        headers: enc ? { "accept-encoding": enc } : {},
      });
      assertEquals(raw.headers.get("content-encoding"), null, String(enc));
      assert((await raw.text()).startsWith("console.log"), String(enc));
    }
    const css = await app.request("/ui/assets/main-ABC.css", {
      headers: { "accept-encoding": "gzip" },
    });
    assertEquals(css.headers.get("content-encoding"), null, "no .gz twin: sent as is");
    assertEquals(await css.text(), "body{}");

    for (const path of ["/ui/assets/nope.js", "/ui/assets/..%2Findex.html", "/ui/assets/.x"]) {
      const r = await app.request(path);
      assertEquals(r.status, 404, path);
      await r.body?.cancel();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ui assets: without a build, 503 naming the build task", async () => {
  const app = appOver("/nonexistent/novactl-ui-dist");
  for (const path of ["/ui/", "/ui/vms", "/ui/assets/main-ABC.js"]) {
    const r = await app.request(path);
    assertEquals(r.status, 503, path);
    assert((await r.text()).includes("deno task build:ui"), path);
  }
});
