/**
 * The web dashboard (issue 13, item 4) in a real Chromium against a real 3-node cluster
 * (HTTPS, TCG guests):
 *
 * - `/ui/` without a token shows the sign-in; a wrong token gets a message naming the refusal;
 * - signed in, the cluster page lists the 3 nodes with health and roles, one of them leader;
 * - a VM created from the VM list's form appears in the list and turns `running` there, with
 *   no page load in between (live through the event stream, `?token=` on EventSource);
 * - its detail page shows its state and stats charts; a migration started there shows its
 *   operation until it succeeds and the VM's new node; a snapshot taken there is listed; a
 *   stop from the page turns it `stopped`, again live;
 * - its serial console tab (xterm.js over the node's WebSocket relay): a command typed into
 *   the terminal is answered by the guest's shell (created with user-data from the form that
 *   runs one on ttyS0), and the answer differs from what was typed (`echo $((6*7))-NV-UI`
 *   answers `42-NV-UI`), so the tty's echo cannot pass for it;
 * - its graphical console tab (noVNC, RFB relayed to QEMU's VNC server) connects and draws a
 *   canvas of the guest's VGA text screen (720x400, not QEMU's placeholder), not one flat colour;
 * - every page is saved as a screenshot in tests/artifacts/ui/ (git-ignored).
 */
import type { Page } from "playwright-core";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { guestImportArgs, scriptUserData, testGuest } from "../bench/lib/guest.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { cli, eventually, step } from "./support/api.ts";
import { ARTIFACTS_DIR, openBrowser } from "./support/browser.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/** A shell on the serial port (as in console_test.ts), and a mark once it reads it. */
const SHELL = `sh -c 'echo NV-SHELL-READY; exec sh' </dev/ttyS0 >/dev/ttyS0 2>&1
`;

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: `${ARTIFACTS_DIR}${name}.png`, fullPage: true });
}

testWithTimeout({
  name: "dashboard: sign in, 3 nodes, a VM created in the page turns running live, every page",
  timeoutMs: 8 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const guest = await testGuest();
  await Deno.mkdir(ARTIFACTS_DIR, { recursive: true });
  const cluster = new NovactlCluster({
    env: { NOVACTL_ACCEL: "tcg", NOVACTL_METRICS_INTERVAL_MS: "1000" },
  });
  const { browser, context } = await openBrowser();
  const page = await context.newPage();
  const pageErrors: string[] = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  try {
    await cluster.start(3);
    const base = cluster.nodes[1].url; // any member serves the page; not the first by habit
    const ok = async (...args: string[]) => {
      const r = await cli([...args, "--server", base, "--token", cluster.adminToken]);
      assertEquals(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    };
    await ok(...guestImportArgs(guest, "guest"));

    await step(t, "a wrong token gets a clear refusal", async () => {
      await page.goto(`${base}/ui/`);
      await page.fill("input[name=token]", "not-a-token");
      await page.click("button[type=submit]");
      const msg = await page.locator("[role=alert]").textContent({ timeout: 15_000 });
      assert(/refused/.test(msg ?? "") && /invalid API token/.test(msg ?? ""), String(msg));
      await shot(page, "signin-refused");
    });

    await step(t, "signed in, the cluster page shows 3 nodes and a leader", async () => {
      await page.fill("input[name=token]", cluster.adminToken);
      await page.click("button[type=submit]");
      await page.locator("[data-testid=nodes] tbody tr").nth(2).waitFor({ timeout: 15_000 });
      assertEquals(await page.locator("[data-testid=nodes] tbody tr").count(), 3);
      assertEquals(await page.textContent("[data-testid=node-count]"), "3");
      // The nodes and the cluster status load separately: the leader shows once the latter has.
      const named = page.locator("[data-testid=leader]", { hasText: /^n[123]$/ });
      await named.waitFor({ timeout: 15_000 }).catch(() => {});
      const leader = await page.textContent("[data-testid=leader]");
      assert(["n1", "n2", "n3"].includes(leader ?? ""), `leader ${leader}`);
      // A member that has just joined may show offline until its first contact is seen.
      for (const n of ["n1", "n2", "n3"]) {
        await page.locator(`tr[data-node=${n}] .badge[data-state=ready]`).waitFor({
          timeout: 30_000,
        });
      }
      await shot(page, "cluster");
    });

    await step(t, "a VM created in the page turns running in the list, live", async () => {
      await page.click("nav.side >> text=VMs");
      await page.waitForSelector("[data-testid=vms]");
      // Gone if the page loads again: the state must come through the open page.
      await page.evaluate(() => ((globalThis as Record<string, unknown>).stayed = true));
      await page.click("text=Create VM");
      await page.fill("form[aria-label='Create VM'] input[name=name]", "web1");
      await page.selectOption("form[aria-label='Create VM'] select[name=image]", "guest");
      await page.fill("form[aria-label='Create VM'] input[name=memoryMiB]", "128");
      await page.fill(
        "form[aria-label='Create VM'] textarea[name=userData]",
        scriptUserData(SHELL),
      );
      await page.click("form[aria-label='Create VM'] button[type=submit]");
      await page.locator("tr[data-vm=web1]").waitFor({ timeout: 15_000 });
      await page.locator("tr[data-vm=web1] .badge[data-state=running]").waitFor({
        timeout: 3 * MINUTE,
      });
      assert(await page.evaluate(() => (globalThis as Record<string, unknown>).stayed === true));
      await shot(page, "vms");
    });

    await step(t, "its page: its state, and charts of its stats", async () => {
      await page.click("tr[data-vm=web1] a");
      await page.waitForSelector("[data-testid=vm-state]");
      assert((await page.textContent("[data-testid=vm-state]"))!.startsWith("running"));
      await shot(page, "vm-detail");
      await page.click("role=tab[name='Stats']");
      // Samples every second here; the page reads the history again every 5 s.
      await page.locator(".chart canvas").nth(3).waitFor({ timeout: 60_000 });
      assertEquals(await page.locator(".chart canvas").count(), 4, "CPU, memory, disk, network");
      await shot(page, "vm-stats");
      await page.click("role=tab[name='Overview']");
    });

    await step(t, "migrated from the page, with the operation's progress", async () => {
      const from = (await page.textContent("[data-testid=vm-node]"))!;
      const to = ["n1", "n2", "n3"].find((n) => n !== from)!;
      await page.selectOption("select[aria-label='Migrate to']", to);
      await page.click("button:text-is('Migrate')");
      await page.locator("[data-testid=operation] .badge[data-state=succeeded]").waitFor({
        timeout: 3 * MINUTE,
      });
      await page.locator("[data-testid=vm-node]", { hasText: to }).waitFor({ timeout: 30_000 });
      assert((await page.textContent("[data-testid=vm-state]"))!.startsWith("running"));
      await shot(page, "vm-migrated");
    });

    await step(t, "a snapshot taken from the page is listed", async () => {
      await page.fill("input[aria-label='Snapshot name']", "s1");
      await page.click("button:text-is('Take snapshot')");
      await page.locator("td:text-is('s1')").waitFor({ timeout: MINUTE });
      await shot(page, "vm-snapshot");
    });

    await step(t, "the serial console tab: typed input is answered by the guest", async () => {
      await page.click("role=tab[name='Serial console']");
      await page.locator("[data-testid=console-status][data-status=connected]").waitFor({
        timeout: 30_000,
      });
      const rows = page.locator("[data-testid=serial-console] .xterm-rows");
      await rows.waitFor({ timeout: 15_000 });
      const termText = async () => (await rows.textContent()) ?? "";
      // The shell prints its mark once it reads ttyS0, and the log's tail comes first: waited
      // for, briefly, so the command is not typed before the shell; not required, as a long
      // log's tail may have lost it.
      await eventually(
        "the shell's mark",
        async () => /NV-SHELL-READY/.test(await termText()),
        30_000,
      )
        .catch(() => {});
      await page.click("[data-testid=serial-console]");
      await page.keyboard.type("echo $((6*7))-NV-UI");
      await page.keyboard.press("Enter");
      // Only the guest's shell prints 42: what was typed (echoed by the tty) says $((6*7)).
      await eventually(
        "the answer in the terminal",
        async () => /42-NV-UI/.test(await termText()),
        MINUTE,
      )
        .catch(async (err) => {
          await shot(page, "vm-serial-failed");
          throw new Error(
            `${(err as Error).message}; the terminal shows ${JSON.stringify(await termText())}`,
          );
        });
      await shot(page, "vm-serial");
    });

    await step(t, "the graphical console tab draws the VM's screen", async () => {
      await page.click("role=tab[name='Graphical console']");
      await page.locator("[data-testid=console-status][data-status=connected]").waitFor({
        timeout: 30_000,
      });
      // The VM has a VGA device: noVNC's canvas is the guest's text screen (720x400), not
      // QEMU's 640x480 "no graphic display device" placeholder, and not one flat colour (a
      // canvas that never got a frame stays blank).
      const canvas = page.locator("[data-testid=vnc-console] canvas").first();
      await canvas.waitFor({ state: "attached", timeout: 15_000 });
      // How many distinct pixel values the canvas holds (stops counting at 2).
      const distinct = () =>
        canvas.evaluate((el) => {
          const c = el as unknown as {
            width: number;
            height: number;
            getContext(kind: "2d"): {
              getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
            };
          };
          if (!c.width || !c.height) return 0;
          const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          const words = new Uint32Array(px.buffer, px.byteOffset, px.length / 4); // RGBA each
          return words.some((w) => w !== words[0]) ? 2 : 1;
        });
      const deadline = Date.now() + MINUTE;
      let n = await distinct();
      while (n < 2 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        n = await distinct();
      }
      await shot(page, "vm-vnc");
      assert(n >= 2, "the noVNC canvas is blank (all its pixels are the same)");
      const size = await canvas.evaluate((el) => {
        const c = el as unknown as { width: number; height: number };
        return { width: c.width, height: c.height };
      });
      assertEquals(size, { width: 720, height: 400 }, "the guest's VGA text screen");
      await page.click("role=tab[name='Overview']");
    });

    await step(t, "stopped from the page, live", async () => {
      await page.click("button:text-is('Stop')");
      await page.locator("[data-testid=vm-state]", { hasText: /^stopped/ }).waitFor({
        timeout: 2 * MINUTE,
      });
      await shot(page, "vm-stopped");
    });

    await step(t, "the other pages render", async () => {
      for (
        const [nav, name, sel] of [
          ["Images", "images", "text=guest"],
          ["Groups", "groups", "h1:text('Placement groups')"],
          ["Operations", "operations", "h1:text('Operations')"],
          ["Alerts", "alerts", "h1:text('Alerts')"],
          ["Audit log", "audit", "td:text('POST /api/v1/vms')"],
        ]
      ) {
        await page.click(`nav.side >> text=${nav}`);
        await page.waitForSelector(sel, { timeout: 15_000 });
        assertEquals(await page.locator("main .error").count(), 0, `${name}: no error shown`);
        await shot(page, name);
      }
    });
    assertEquals(pageErrors, [], "no uncaught errors in the page");
  } finally {
    await browser.close().catch(() => {});
    await cluster.stop();
  }
});
