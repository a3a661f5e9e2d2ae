// Drives the dashboard as an operator would: sees a dead-lettered event, clicks Replay, sees
// the event delivered. Run by tests/e2e/dashboard.rs, which starts Hookwall and makes the dead
// letter first. Environment:
//   DASHBOARD_URL   the dashboard, with `#token=…`
//   EVENT_ID        the dead-lettered event
//   ARTIFACT_DIR    where the screenshots go
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.DASHBOARD_URL;
const eventId = process.env.EVENT_ID;
const artifacts = process.env.ARTIFACT_DIR;
if (!url || !eventId || !artifacts) {
  console.error("DASHBOARD_URL, EVENT_ID and ARTIFACT_DIR are required");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "hookwall-chromium-"));
// A fresh profile each run (playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let failed = false;
const page = browser.pages()[0] || (await browser.newPage());
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
try {
  await page.goto(url);
  const letter = page.locator(`#dead-letters tr[data-event-id="${eventId}"]`);
  await letter.waitFor({ timeout: 15000 });
  const event = page.locator(`#events tr[data-event-id="${eventId}"]`);
  await event.waitFor({ timeout: 15000 });
  const before = await event.getAttribute("data-status");
  await page.screenshot({ path: join(artifacts, "1-dead-letter.png"), fullPage: true });

  // The tables are re-rendered on every refresh; on a loaded machine a click can land on a row
  // that is being replaced and be lost. An operator would click again: so do we, up to 3 times.
  const delivered = page.locator(`#events tr[data-event-id="${eventId}"][data-status="delivered"]`);
  for (let attempt = 1; ; attempt++) {
    await letter.locator("button.replay").click();
    try {
      await delivered.waitFor({ timeout: 10000 });
      break;
    } catch (e) {
      if (attempt >= 3 || (await letter.count()) === 0) throw e;
    }
  }
  await letter.waitFor({ state: "detached", timeout: 10000 });
  const message = await page.locator("#message").textContent();
  await page.screenshot({ path: join(artifacts, "2-delivered.png"), fullPage: true });
  console.log(JSON.stringify({ before, after: "delivered", message, errors }));
  if (errors.length) {
    console.error("the page logged errors:", errors);
    failed = true;
  }
} catch (e) {
  failed = true;
  console.error(String(e));
  await page.screenshot({ path: join(artifacts, "failure.png"), fullPage: true }).catch(() => {});
  console.error("page text:\n" + (await page.locator("body").innerText().catch(() => "?")));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
