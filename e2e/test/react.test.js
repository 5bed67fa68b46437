// The React example (examples/web-sdk/react, built from the npm package
// sdk/pack.sh makes) in Chromium against the real `deskbridge demo
// --allow-origin`: StrictMode mounts its effects twice and still one session
// opens; routes keep the chat; sign-in makes it the customer's; a reload
// resumes it; sign-out clears it.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { freePort, startDemo } from '../lib/demo.js';
import { launch, newWatchedContext, screenshot, SCREENSHOTS } from '../lib/browser.js';
import { startSite } from '../lib/site.js';

const tid = (id) => `[data-testid="${id}"]`;

let demo;
let site;
let browser;

describe('React example', { timeout: 180_000 }, () => {
  before(async () => {
    const port = await freePort();
    demo = await startDemo({ ttl: 60, logPath: join(SCREENSHOTS, 'demo-react.log'), allowOrigins: [`http://127.0.0.1:${port}`] });
    site = await startSite(demo, port);
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await site?.stop();
    await demo?.stop();
  });

  test('StrictMode, routes, sign-in, reload and sign-out: one session per customer state, never two at once', async () => {
    const w = await newWatchedContext(browser);
    try {
      const page = await w.page();
      let opens = 0;
      page.on('request', (r) => /\/v1\/sessions$/.test(r.url()) && r.method() === 'POST' && (opens += 1));
      const session = () => page.locator(tid('status')).getAttribute('data-session');
      const chat = (login) => page.locator(`${tid('status')}[data-status="connected"][data-login="${login}"]`).waitFor();

      await page.goto(`${site.url}/react/`);
      await chat('anonymous');
      // StrictMode ran the effect twice: the second load() is the same chat.
      assert.equal(await page.evaluate(() => window.example.loads), 2, 'StrictMode mounted the effect twice');
      assert.equal(opens, 1, 'one session for a double mount');
      const anonymous = await session();

      await page.locator(tid('username')).fill('alice');
      await page.locator(tid('password')).fill(demo.password('alice'));
      await page.locator(tid('signin-submit')).click();
      await chat('authenticated');
      assert.equal(await session(), anonymous, 'the anonymous session becomes the customer\'s');

      await page.locator(tid('nav-account')).click();
      await page.locator(tid('page-account')).waitFor();
      await chat('authenticated');
      assert.equal(await session(), anonymous, 'a route change keeps the chat');

      await page.reload();
      await page.locator(tid('page-account')).waitFor();
      await chat('authenticated');
      assert.equal(await session(), anonymous, 'a reload resumes it');
      assert.equal(opens, 1);
      await screenshot(page, 'sdk-react');

      await page.locator(tid('signout')).click();
      await chat('anonymous');
      assert.notEqual(await session(), anonymous, 'sign-out leaves the customer\'s session');
      assert.equal(opens, 2);
      const seen = await page.evaluate(() => window.example);
      assert.deepEqual([seen.errors, seen.identityChanges], [[], []]);
      assert.deepEqual(w.problems, []);
    } finally {
      await w.context.close();
    }
  });
});
