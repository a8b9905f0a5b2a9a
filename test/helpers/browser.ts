/**
 * Debian's Chromium driven by playwright-core (never a downloaded browser). Browser
 * suites skip where /usr/bin/chromium is missing (a fresh machine with only Node and
 * npm), and fail instead when SHARDCHAT_REQUIRE_BROWSER=1, as .ci/run sets it.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { REPO_ROOT } from './processes.js';

export const CHROMIUM = process.env.SHARDCHAT_CHROMIUM ?? '/usr/bin/chromium';
export const HAVE_BROWSER = existsSync(CHROMIUM);
if (!HAVE_BROWSER && process.env.SHARDCHAT_REQUIRE_BROWSER === '1') {
  throw new Error(
    `SHARDCHAT_REQUIRE_BROWSER=1 but there is no Chromium at ${CHROMIUM} (apt-get install chromium)`,
  );
}
if (!HAVE_BROWSER) {
  process.stderr.write(`browser tests skipped: no Chromium at ${CHROMIUM} (apt-get install chromium)\n`);
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-quic',
      '--no-first-run',
      '--disable-sync',
    ],
  });
}

export const ARTIFACTS = path.join(REPO_ROOT, 'test-artifacts', 'browser');

/** Saves a screenshot under test-artifacts/browser/ (kept by CI, ignored by git). */
export async function screenshot(page: Page, name: string): Promise<string> {
  await mkdir(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}
