// Debian's Chromium, driven by playwright-core. Every page is watched: a
// console error or an uncaught exception fails the test, unless the test
// itself provoked that exact refusal (a wrong password's 401, say).

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { E2E_ROOT } from './demo.js';

export const SCREENSHOTS = join(E2E_ROOT, 'screenshots');

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
  });
}

/**
 * A browser context (its own cookies and storage) whose pages report their
 * errors to `problems`. `expect(urlPattern, status)` allows one kind of
 * failed request for the rest of the context's life: `status` is an HTTP
 * status, or the text of a network error (`net::ERR_CONNECTION_RESET`).
 */
export async function newWatchedContext(browser, options = {}) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    locale: 'en-US',
    timezoneId: 'UTC',
    colorScheme: 'light',
    ...options,
  });
  context.setDefaultTimeout(15_000);
  const problems = [];
  const allowed = [];
  const watch = (page) => {
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const text = msg.text();
      const url = msg.location()?.url || '';
      const expected = allowed.some((a) => a.url.test(url) && text.includes(typeof a.status === 'number' ? `status of ${a.status}` : a.status));
      if (!expected) problems.push(`console error: ${text} (${url || page.url()})`);
    });
    page.on('pageerror', (err) => problems.push(`uncaught exception on ${page.url()}: ${err.stack || err.message}`));
  };
  context.on('page', watch);
  return {
    context,
    problems,
    expect(url, status) {
      allowed.push({ url, status });
    },
    async page() {
      return context.newPage();
    },
  };
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  return path;
}

/** Retries `probe` until it returns a truthy value or `timeoutMs` passes. */
export async function eventually(what, probe, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      last = undefined;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}${last ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}
