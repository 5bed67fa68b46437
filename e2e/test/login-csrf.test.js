// Login CSRF, in Chromium: a hostile page on another site posts a login form
// to the backend's /customer_authenticate with the attacker's credentials,
// to sign the visitor into the attacker's account (issue 21). The backend
// refuses it (403 cross_site_request) and sets no cookie; the demo site's own
// sign-in, from the backend's origin, still works.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { freePort, startDemo } from '../lib/demo.js';
import { launch, newWatchedContext, screenshot, SCREENSHOTS } from '../lib/browser.js';

let demo;
let browser;
let hostile; // { server, url }

/** The attacker's page: a form that posts itself to the backend on load. */
function hostilePage(action, username, password) {
  const field = (name, value) => `<input type="hidden" name="${name}" value="${value}">`;
  return `<!doctype html><title>You won a prize</title>
<form id="f" method="POST" action="${action}">${field('username', username)}${field('password', password)}</form>
<script>document.getElementById('f').submit();</script>`;
}

describe('login CSRF', { timeout: 120_000 }, () => {
  before(async () => {
    demo = await startDemo({ ttl: 600, logPath: join(SCREENSHOTS, 'demo-login-csrf.log') });
    browser = await launch();
    const port = await freePort();
    const page = hostilePage(`${demo.backendUrl}/customer_authenticate`, 'bruno', demo.password('bruno'));
    const server = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page);
    });
    await new Promise((r) => server.listen(port, '127.0.0.1', r));
    // "localhost", not 127.0.0.1: another host, so another site, as an attacker's would be.
    hostile = { server, url: `http://localhost:${port}/` };
  });

  after(async () => {
    hostile?.server.close();
    await browser?.close();
    await demo?.stop();
  });

  test("a hostile site's login form is refused and sets no cookie", async () => {
    const visitor = await newWatchedContext(browser);
    try {
      visitor.expect(/\/customer_authenticate$/, 403);
      // The refusal is a JSON page; Chromium asks the backend for its icon.
      visitor.expect(/\/favicon\.ico$/, 404);
      const page = await visitor.page();
      const answered = page.waitForResponse((r) => r.url() === `${demo.backendUrl}/customer_authenticate`);
      await page.goto(hostile.url);
      const response = await answered;
      assert.equal(response.status(), 403);
      const body = await response.json();
      assert.equal(body.error, 'cross_site_request');
      assert.equal(response.headers()['set-cookie'], undefined, 'no Set-Cookie on the refusal');
      await page.waitForLoadState();
      await screenshot(page, 'login-csrf-refused');
      assert.deepEqual(await visitor.context.cookies(demo.backendUrl), [], 'no cookie for the backend');
      assert.deepEqual(visitor.problems, []);
    } finally {
      await visitor.context.close();
    }
  });

  test("the demo site's own sign-in still sets its session", async () => {
    const visitor = await newWatchedContext(browser);
    try {
      const page = await visitor.page();
      const signedIn = page.waitForResponse((r) => r.url() === `${demo.backendUrl}/customer_authenticate`);
      await page.goto(`${demo.backendUrl}/`);
      // The site's own form (assets/site/index.html).
      await page.locator('[data-testid="site-username"]').fill('alice');
      await page.locator('[data-testid="site-password"]').fill(demo.password('alice'));
      await page.locator('[data-testid="site-signin-submit"]').click();
      assert.equal((await signedIn).status(), 200);
      const cookies = await visitor.context.cookies(`${demo.backendUrl}/demo/token`);
      assert.ok(cookies.some((c) => c.name === 'deskbridge_demo_site'), 'the site session is set');
    } finally {
      await visitor.context.close();
    }
  });
});
