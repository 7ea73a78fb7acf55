/**
 * A real browser for the web app's tests: Debian's Chromium (`/usr/bin/chromium`, installed
 * by `.ci/run`) driven by playwright-core, which never downloads a browser of its own.
 */
import { access } from "node:fs/promises";
import { chromium, type Browser, type Page } from "playwright-core";

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = "/usr/bin/chromium";

/** Flags for a closed network: no first-run, sync, component or background connections. */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Launches the browser; playwright gives every launch a fresh user data directory. */
export async function launchChromium(): Promise<Browser> {
  await access(CHROMIUM).catch(() => {
    throw new Error(
      `${CHROMIUM} is missing: install Debian's browser with 'apt-get install -y --no-install-recommends chromium' (.ci/run does).`,
    );
  });
  return await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

/** Signs in on the web app's sign-in page with `token` and waits for the first view. */
export async function signInWith(page: Page, origin: string, token: string): Promise<void> {
  await page.goto(`${origin}/#/signin`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator('main[data-route=""][data-ready]').waitFor();
}
