/**
 * Debian's Chromium (`apt-get install chromium`, scripts/setup.sh) driven by playwright-core,
 * for the dashboard's tests and bench:ui. Nodes serve HTTPS with their cluster's own CA,
 * which the browser is told to accept.
 *
 * @module
 */
import { type Browser, type BrowserContext, chromium } from "playwright-core";

/** Where Debian installs it; NOVACTL_CHROMIUM overrides. */
export function chromiumPath(): string {
  return Deno.env.get("NOVACTL_CHROMIUM") || "/usr/bin/chromium";
}

/** Whether the browser is installed (tests fail with this message when it is not). */
export async function chromiumMissing(): Promise<string | null> {
  try {
    await Deno.stat(chromiumPath());
    return null;
  } catch {
    return `${chromiumPath()} not found: run scripts/setup.sh (apt-get install chromium)`;
  }
}

/** A headless Chromium and one context (one tab's storage) in it. */
export async function openBrowser(): Promise<{ browser: Browser; context: BrowserContext }> {
  const missing = await chromiumMissing();
  if (missing) throw new Error(missing);
  const browser = await chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    // Root in a container has no user namespace for Chromium's sandbox.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 800 },
  });
  return { browser, context };
}

/** Where tests save screenshots (git-ignored). */
export const ARTIFACTS_DIR = new URL("../artifacts/ui/", import.meta.url).pathname;
