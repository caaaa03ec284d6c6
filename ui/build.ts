/**
 * Builds the dashboard (ui/src/) into static assets under ui/dist/: `index.html`, and
 * content-hashed scripts and styles under `assets/`, each with a `.gz` twin that the node
 * serves to clients that accept gzip (api/ui_assets.ts), and `manifest.json` listing every
 * file with its raw and gzip size (the bench reads the total from there).
 *
 * The browser packages come from ui/package.json (`npm ci --prefix ui`, run by
 * scripts/setup.sh); esbuild resolves them from ui/node_modules.
 *
 * @module
 */
import * as esbuild from "esbuild";
import { gzipSync } from "node:zlib";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

/** Where the build writes; git-ignored. */
export const DIST_DIR: string = join(dirname(fileURLToPath(import.meta.url)), "dist");
const SRC_DIR = join(dirname(fileURLToPath(import.meta.url)), "src");
/** The URL path the node serves the dashboard under. */
export const UI_BASE = "/ui/";

/** One built file as manifest.json lists it. */
export interface BuiltFile {
  path: string;
  bytes: number;
  /** Of the files a browser loads (scripts, styles, the page). */
  gzipBytes: number;
}

/** manifest.json. */
export interface UiManifest {
  builtAt: string;
  files: BuiltFile[];
  gzipBytes: number;
}

/**
 * Bundles, minifies and compresses the dashboard into `outDir` (emptied first).
 *
 * @param outDir where to write (default: ui/dist)
 * @returns the manifest written beside the assets
 * @throws when esbuild reports an error (a missing `npm ci --prefix ui` among them)
 */
export async function buildUi(outDir: string = DIST_DIR): Promise<UiManifest> {
  await Deno.remove(outDir, { recursive: true }).catch(() => {});
  await Deno.mkdir(join(outDir, "assets"), { recursive: true });
  try {
    const result = await esbuild.build({
      entryPoints: [join(SRC_DIR, "main.tsx")],
      outdir: join(outDir, "assets"),
      bundle: true,
      // The consoles (xterm.js, noVNC) load as their own chunks when a console tab opens.
      splitting: true,
      format: "esm",
      minify: true,
      target: ["es2022", "chrome110", "firefox115", "safari16"],
      jsx: "automatic",
      jsxImportSource: "preact",
      entryNames: "[name]-[hash]",
      chunkNames: "chunk-[hash]",
      assetNames: "[name]-[hash]",
      loader: { ".woff": "file", ".woff2": "file", ".ttf": "file", ".svg": "file" },
      metafile: true,
      legalComments: "linked",
      logLevel: "warning",
    });
    const outputs = Object.entries(result.metafile!.outputs);
    const entry = outputs.find(([, o]) => o.entryPoint?.endsWith("main.tsx"));
    if (!entry) throw new Error("esbuild wrote no entry script");
    const js = UI_BASE + relative(outDir, entry[0]);
    const css = entry[1].cssBundle ? UI_BASE + relative(outDir, entry[1].cssBundle) : null;
    // The entry's static imports, fetched along with it instead of after it has been parsed.
    const preload = entry[1].imports
      .filter((i) => i.kind === "import-statement" && !i.external)
      .map((i) => UI_BASE + relative(outDir, i.path));
    await Deno.writeTextFile(join(outDir, "index.html"), indexHtml(js, css, preload));
  } finally {
    await esbuild.stop();
  }
  const files: BuiltFile[] = [];
  for await (const path of walk(outDir)) {
    if (path.endsWith(".gz")) continue;
    const raw = await Deno.readFile(path);
    const gz = gzipSync(raw, { level: 9 });
    await Deno.writeFile(path + ".gz", gz);
    files.push({ path: relative(outDir, path), bytes: raw.length, gzipBytes: gz.length });
  }
  files.sort((a, b) => a.path.localeCompare(b.path));
  const manifest: UiManifest = {
    builtAt: new Date().toISOString(),
    files,
    // What a browser may load: the license texts beside the bundles are for people.
    gzipBytes: files.filter((f) => /\.(js|css|html)$/.test(f.path))
      .reduce((s, f) => s + f.gzipBytes, 0),
  };
  await Deno.writeTextFile(join(outDir, "manifest.json"), JSON.stringify(manifest, null, 2));
  return manifest;
}

function indexHtml(js: string, css: string | null, preload: string[]): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>novactl</title>
${css ? `<link rel="stylesheet" href="${css}">` : ""}
${preload.map((p) => `<link rel="modulepreload" href="${p}">`).join("\n")}
<script type="module" src="${js}"></script>
</head>
<body><div id="app"></div></body>
</html>
`;
}

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) yield* walk(p);
    else if (e.isFile) yield p;
  }
}

if (import.meta.main) {
  const m = await buildUi();
  const kib = (n: number) => (n / 1024).toFixed(1);
  for (const f of m.files) {
    console.log(`${f.path}\t${kib(f.bytes)} KiB\t${kib(f.gzipBytes)} KiB gz`);
  }
  console.log(`ui: ${m.files.length} files in ${DIST_DIR}, ${kib(m.gzipBytes)} KiB gzipped`);
}
