/**
 * The web dashboard that every node serves at `/ui/` (api/ui_assets.ts).
 *
 * - `src/`: the page, in Preact (TSX): sign-in with an API token, the cluster overview,
 *   the VM list (live through `GET /api/v1/events`), a VM's detail with uPlot charts of its
 *   stats history, actions, snapshots, disks and NICs, its serial console (xterm.js) and
 *   graphical console (noVNC), and the images, groups, operations, alerts and audit pages.
 *   It talks to the node only through the authenticated REST API.
 * - `package.json` / `package-lock.json`: the browser packages, pinned; installed into
 *   `ui/node_modules` by `npm ci --prefix ui` (scripts/setup.sh).
 * - `build.ts`: `deno task build:ui` bundles them with esbuild into `ui/dist/` (git-ignored):
 *   content-hashed files with gzip twins and a manifest of their sizes.
 *
 * @module
 */
export { buildUi, type BuiltFile, DIST_DIR, UI_BASE, type UiManifest } from "./build.ts";
