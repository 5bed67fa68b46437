// The web SDK on a company's page of its own (examples/web-sdk), in Chromium
// against the real `deskbridge demo --allow-origin`:
//   1. the plain page loads the SDK by its versioned URL with the integrity
//      value docs/web-sdk.md gives, opens anonymously, signs in, survives a reload;
//   2. the same page on an origin the channel does not list (localhost, not
//      127.0.0.1) ends `failed` with origin_not_allowed, one console warning
//      with the fix, and no retries;
//   3. a wrong app key or connection fails at once; load() starts again;
//   4. switching customers without clear(): by the hint, by the token, and
//      a site session that lapsed;
//   5. three tabs of one customer: one of them asks the company for a fresh
//      token, the others take it; each shows the login expired meanwhile;
//   6. the chat widget's id as `externalRef` at load: an agent finds the
//      conversation by it over HTTP, it follows the visitor's sign-in, and a
//      reload keeps it;
//   7. `setExternalRef` after load binds it to the open session, and before
//      the session opens it goes with the opening;
//   8. a ref another conversation holds, or a malformed one, reaches the page
//      as an error event; the chat goes on without it;
//   9. a ref the gateway could not be reached for is kept, through a
//      reload, and bound once the gateway answers.
// The tests share one demo and one example site, and run in order.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { E2E_ROOT, freePort, startDemo } from '../lib/demo.js';
import { eventually, launch, newWatchedContext, screenshot, SCREENSHOTS } from '../lib/browser.js';
import { startSite } from '../lib/site.js';

const TTL = Number(process.env.E2E_CUSTOMER_TOKEN_TTL || 12);
const tid = (id) => `[data-testid="${id}"]`;
const WORKSPACE_VERSION = readFileSync(resolve(E2E_ROOT, '..', 'Cargo.toml'), 'utf8').match(/\[workspace\.package\][^[]*?\nversion = "([^"]+)"/)[1];

let demo;
let site;
let browser;
let agentToken; // an agent of the desk, to look conversations up by ref

function assertNoProblems(...watched) {
  assert.deepEqual(watched.flatMap((w) => w.problems), [], 'browser console errors or uncaught exceptions');
}

const status = (page) => page.locator(tid('status'));
const stateOf = (page) => page.evaluate(() => window.Deskbridge.getState());

async function signIn(page, username) {
  await page.locator(`${tid('signin')}:not([hidden])`).waitFor();
  await page.locator(tid('username')).fill(username);
  await page.locator(tid('password')).fill(demo.password(username));
  await page.locator(tid('signin-submit')).click();
  await page.locator(`${tid('status')}[data-status="connected"][data-login="authenticated"]`).waitFor();
}

/** A demo whose tokens live `ttl` seconds, allowing the site's origin; the site, a browser and an agent's token. */
async function startWorld(ttl, log) {
  const port = await freePort();
  demo = await startDemo({ ttl, logPath: join(SCREENSHOTS, log), allowOrigins: [`http://127.0.0.1:${port}`] });
  site = await startSite(demo, port);
  browser = await launch();
  agentToken = demo.agentToken('sdk-ref-agent', 'agent');
}

async function stopWorld() {
  await browser?.close();
  await site?.stop();
  await demo?.stop();
}

describe('web SDK on a page of its own', { timeout: 300_000 }, () => {
  before(() => startWorld(TTL, 'demo-sdk.log'));
  after(stopWorld);

  test('1. the plain page: versioned SDK with the documented integrity, anonymous, signed in, a reload resumes', async () => {
    const w = await newWatchedContext(browser);
    try {
      const page = await w.page();
      const sdk = page.waitForResponse((r) => r.url() === `${demo.gatewayUrl}/sdk/v1/deskbridge.js`);
      await page.goto(`${site.url}/`);
      assert.equal((await sdk).status(), 200);
      await page.locator(`${tid('status')}[data-status="connected"][data-login="anonymous"]`).waitFor();
      assert.equal(await page.evaluate(() => window.Deskbridge.version), WORKSPACE_VERSION);
      await signIn(page, 'alice');
      const signedIn = await stateOf(page);
      assert.equal(signedIn.authenticated, true);
      await screenshot(page, 'sdk-plain-page');

      await page.reload();
      await page.locator(`${tid('status')}[data-status="connected"][data-login="authenticated"]`).waitFor();
      const resumed = await stateOf(page);
      assert.equal(resumed.sessionId, signedIn.sessionId, 'the same session after a reload');
      assert.equal(resumed.conversationId, signedIn.conversationId);
      assert.deepEqual(await page.evaluate(() => window.example.identityChanges), []);

      await page.locator(tid('signout')).click();
      await page.locator(`${tid('status')}[data-status="connected"][data-login="anonymous"]`).waitFor();
      assert.notEqual((await stateOf(page)).sessionId, signedIn.sessionId, 'sign-out leaves the session');
      assertNoProblems(w);
    } finally {
      await w.context.close();
    }
  });

  test('2. an origin the channel does not list: failed, origin_not_allowed, one warning with the fix, no retries', async () => {
    const w = await newWatchedContext(browser);
    try {
      const page = await w.page();
      const warnings = [];
      page.on('console', (m) => m.type() === 'warning' && m.text().startsWith('Deskbridge:') && warnings.push(m.text()));
      let opens = 0;
      page.on('request', (r) => /\/v1\/sessions$/.test(r.url()) && r.method() === 'POST' && (opens += 1));
      // localhost is not 127.0.0.1: the demo allows only the latter.
      const origin = `http://localhost:${site.port}`;
      await page.goto(`${origin}/`);
      await page.locator(`${tid('status')}[data-status="failed"][data-reason="origin_not_allowed"]`).waitFor();
      const state = await stateOf(page);
      assert.equal(state.reason, 'origin_not_allowed');
      assert.deepEqual(await page.evaluate(() => window.example.errors), ['open:origin_not_allowed']);
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.ok(warnings[0].includes(`--allow-origin ${origin}`) && warnings[0].includes('allowed_origins'), warnings[0]);
      assert.match(await page.locator(tid('problem')).textContent(), /may not use channel "web"/);
      await screenshot(page, 'sdk-origin-not-allowed');
      // No retry: the same one attempt a while later.
      await new Promise((r) => setTimeout(r, 4000));
      assert.equal(opens, 1, 'no retries after a permanent error');
      assert.equal((await stateOf(page)).status, 'failed');
      // The browser itself reports the refused CORS request; nothing else.
      const others = w.problems.filter((p) => !/CORS|ERR_FAILED/.test(p));
      assert.deepEqual(others, []);
    } finally {
      await w.context.close();
    }
  });

  test('3. a wrong app key or connection fails at once; load() starts again', async () => {
    const w = await newWatchedContext(browser);
    w.expect(/\/v1\/sessions$/, 401);
    w.expect(/\/v1\/sessions$/, 404);
    try {
      const page = await w.page();
      await page.goto(`${site.url}/`);
      await page.locator(`${tid('status')}[data-status="connected"]`).waitFor();
      const seen = await page.evaluate(async () => {
        const D = window.Deskbridge;
        const config = await (await fetch('/config.json')).json();
        const until = async (ok) => {
          const end = Date.now() + 10_000;
          while (!ok(D.getState())) {
            if (Date.now() > end) throw new Error(JSON.stringify(D.getState()));
            await new Promise((r) => setTimeout(r, 50));
          }
          return D.getState();
        };
        const base = { gateway: config.gateway, appKey: config.appKey, channel: config.channel, connection: config.connection };
        D.clear();
        D.load({ ...base, appKey: 'dbw_wrong' });
        const wrongKey = await until((s) => s.status === 'failed');
        D.load({ ...base, connection: 'nope' });
        const wrongConnection = await until((s) => s.status === 'failed' && s.reason === 'unknown_connection');
        D.load(base);
        const fixed = await until((s) => s.status === 'connected');
        return { wrongKey: wrongKey.reason, wrongConnection: wrongConnection.reason, fixed: fixed.reason, errors: window.example.errors };
      });
      assert.equal(seen.wrongKey, 'invalid_app_key');
      assert.equal(seen.wrongConnection, 'unknown_connection');
      assert.equal(seen.fixed, null);
      assert.deepEqual(seen.errors, ['open:invalid_app_key', 'open:unknown_connection']);
      assertNoProblems(w);
    } finally {
      await w.context.close();
    }
  });

  test("4. another customer without clear(): by the hint, by the token's identity, and a site session that lapsed", async () => {
    const w = await newWatchedContext(browser);
    // The gateway's identity_mismatch for bruno's session, on purpose.
    w.expect(/\/authenticate$/, 401);
    try {
      const page = await w.page();
      await page.goto(`${site.url}/`);
      await signIn(page, 'alice');
      const alice = await stateOf(page);

      // The site's session becomes bruno's behind the page's back; the page
      // reloads and says so with its customerHint.
      await page.evaluate((password) => fetch('/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'bruno', password }) }), demo.password('bruno'));
      await page.reload();
      await eventually('a fresh session for bruno', async () => {
        const s = await stateOf(page);
        return s.authenticated && s.sessionId !== alice.sessionId;
      });
      const bruno = await stateOf(page);
      assert.notEqual(bruno.conversationId, alice.conversationId, "bruno is not in alice's conversation");
      assert.deepEqual(await page.evaluate(() => window.example.identityChanges), ['hint']);

      // No hint at all: the gateway finds the token is another customer's.
      const byToken = await page.evaluate(async (password) => {
        await fetch('/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password }) });
        const changed = new Promise((r) => window.Deskbridge.on('identity_changed', r));
        window.Deskbridge.setCustomer({
          contextProvider: (callback) =>
            fetch('/fresh-token', { method: 'POST' })
              .then((r) => r.json())
              .then((t) => callback({ auth: { token: t.JWT, expiresIn: Number(t.expires_in) } })),
        });
        return changed;
      }, demo.password('alice'));
      assert.equal(byToken.reason, 'token');
      assert.equal(byToken.previousConversationId, bruno.conversationId);
      await eventually('alice again, in her own conversation', async () => {
        const s = await stateOf(page);
        return s.authenticated && s.conversationId === alice.conversationId && s.status === 'connected';
      });

      // The site's session lapses (no clear() in the page); on the next load
      // the page says nobody is signed in: the signed-in session is left.
      const before = await stateOf(page);
      await page.evaluate(() => fetch('/logout', { method: 'POST' }));
      await page.reload();
      await page.locator(`${tid('status')}[data-status="connected"][data-login="anonymous"]`).waitFor();
      const after = await stateOf(page);
      assert.notEqual(after.sessionId, before.sessionId);
      assert.notEqual(after.conversationId, alice.conversationId);
      assert.deepEqual(await page.evaluate(() => window.example.identityChanges), ['signed_out']);
      assertNoProblems(w);
    } finally {
      await w.context.close();
    }
  });

  test('5. three tabs of one customer: one fresh token from the company for all three, each shows the login expired meanwhile', async () => {
    const w = await newWatchedContext(browser);
    try {
      const first = await w.page();
      await first.goto(`${site.url}/`);
      await signIn(first, 'alice');
      const tabs = [first];
      for (let i = 0; i < 2; i += 1) {
        const tab = await w.page();
        await tab.goto(`${site.url}/`);
        await tab.locator(`${tid('status')}[data-status="connected"][data-login="authenticated"]`).waitFor();
        tabs.push(tab);
      }
      for (const tab of tabs) {
        await tab.evaluate(() => {
          window.example.logins = [];
          window.Deskbridge.on('state', (s) => window.example.logins.push(`${s.login}:${s.authenticated}`));
        });
      }
      const asked = await site.freshTokens();
      await eventually(
        'every tab took a fresh login',
        async () => (await Promise.all(tabs.map((t) => t.evaluate(() => window.example.refreshes)))).every((n) => n >= 1),
        (TTL * 2 + 20) * 1000,
      );
      const calls = (await site.freshTokens()) - asked;
      assert.equal(calls, 1, 'one call to the company for three tabs');
      for (const tab of tabs) {
        const logins = await tab.evaluate(() => window.example.logins);
        assert.ok(logins.includes('expired:false'), `the tab showed the login expired: ${logins}`);
        assert.equal(logins.at(-1), 'authenticated:true', `${logins}`);
      }
      const sessions = await Promise.all(tabs.map((t) => stateOf(t)));
      assert.equal(new Set(sessions.map((s) => s.sessionId)).size, 3, 'a session per tab');
      assert.equal(new Set(sessions.map((s) => s.conversationId)).size, 1, 'one conversation');
      assertNoProblems(w);
    } finally {
      await w.context.close();
    }
  });
});

/** What an agent finds by a desk ref: GET /v1/conversations?external_ref=, over HTTP. */
async function conversationsByRef(ref) {
  const res = await fetch(`${demo.gatewayUrl}/v1/conversations?external_ref=${encodeURIComponent(ref)}&connection=acme`, {
    headers: { authorization: `Bearer ${agentToken}` },
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()).conversations.map((c) => c.id);
}

/** Waits until the page's state satisfies `ok`, and returns it. */
async function stateWhere(page, what, ok) {
  return eventually(what, async () => {
    const s = await stateOf(page);
    return ok(s) && s;
  });
}

describe("web SDK: the chat widget's id (externalRef)", { timeout: 300_000 }, () => {
  before(() => startWorld(600, 'demo-sdk-ref.log'));
  after(stopWorld);

  test('6. externalRef at load: an agent finds the conversation by it; it follows the sign-in; a reload keeps it', async () => {
    const w = await newWatchedContext(browser);
    try {
      const page = await w.page();
      const opens = [];
      page.on('request', (r) => /\/v1\/sessions$/.test(r.url()) && r.method() === 'POST' && opens.push(JSON.parse(r.postData())));
      await page.goto(`${site.url}/?chat=W-6001`);
      const anonymous = await stateWhere(page, 'the ref bound', (s) => s.status === 'connected' && s.externalRef === 'W-6001');
      assert.equal(anonymous.login, 'anonymous');
      assert.equal(opens.length, 1);
      assert.equal(opens[0].external_ref, 'W-6001', 'sent with the session opening');
      assert.equal(await page.locator(tid('external-ref')).textContent(), 'W-6001');
      assert.deepEqual(await conversationsByRef('W-6001'), [anonymous.conversationId]);

      // The visitor signs in: their conversation, ref included, becomes alice's.
      await signIn(page, 'alice');
      const alice = await stateOf(page);
      assert.notEqual(alice.conversationId, anonymous.conversationId);
      assert.equal(alice.externalRef, 'W-6001');
      assert.deepEqual(await conversationsByRef('W-6001'), [alice.conversationId]);

      // A reload of a page that no longer gives the ref keeps the session's.
      await page.goto(`${site.url}/`);
      await page.locator(`${tid('status')}[data-status="connected"][data-login="authenticated"]`).waitFor();
      const reloaded = await stateOf(page);
      assert.equal(reloaded.sessionId, alice.sessionId);
      assert.equal(reloaded.externalRef, 'W-6001');
      assert.equal(await page.locator(tid('external-ref')).textContent(), 'W-6001');
      assert.deepEqual(await page.evaluate(() => window.example.errors), []);
      assert.equal(opens.length, 1, 'no session opened again');
      await page.locator(tid('signout')).click();
      await stateWhere(page, 'signed out, without the ref', (s) => s.status === 'connected' && s.sessionId !== alice.sessionId);
      assert.equal((await stateOf(page)).externalRef, null, "the signed-out customer's ref stays with her conversation");
      assert.deepEqual(await conversationsByRef('W-6001'), [alice.conversationId]);
      assertNoProblems(w);
    } finally {
      await w.context.close();
    }
  });

  test('7. setExternalRef: on the open session at once, before the opening with it; a reload keeps it', async () => {
    const w = await newWatchedContext(browser);
    try {
      const page = await w.page();
      const sent = [];
      page.on('request', (r) => {
        if (r.method() !== 'POST') return;
        if (/\/v1\/sessions$/.test(r.url())) sent.push(`open:${JSON.parse(r.postData()).external_ref || ''}`);
        if (/\/external-refs$/.test(r.url())) sent.push(`bind:${JSON.parse(r.postData()).external_ref}`);
      });
      await page.goto(`${site.url}/`);
      await signIn(page, 'bruno');
      const bruno = await stateOf(page);
      assert.equal(bruno.externalRef, null);
      // The chat widget learns its chat id after load.
      const after = await page.evaluate(() => window.Deskbridge.setExternalRef('W-7001').then(() => window.Deskbridge.getState()));
      assert.equal(after.externalRef, 'W-7001');
      assert.equal(after.sessionId, bruno.sessionId, 'the same session');
      assert.deepEqual(sent, ['open:', 'bind:W-7001']);
      assert.deepEqual(await conversationsByRef('W-7001'), [bruno.conversationId]);
      // Again the same ref: nothing to send.
      await page.evaluate(() => window.Deskbridge.setExternalRef('W-7001'));
      assert.deepEqual(sent, ['open:', 'bind:W-7001']);

      // Given before the session opens: it goes with the opening. (Signed
      // out of the site first, so the reload below stays anonymous.)
      sent.length = 0;
      const fresh = await page.evaluate(async () => {
        const D = window.Deskbridge;
        const config = await (await fetch('/config.json')).json();
        await fetch('/logout', { method: 'POST' });
        D.clear();
        D.load({ gateway: config.gateway, appKey: config.appKey, channel: config.channel, connection: config.connection });
        await D.setExternalRef('W-7002');
        const end = Date.now() + 10_000;
        while (D.getState().externalRef !== 'W-7002' || D.getState().status !== 'connected') {
          if (Date.now() > end) throw new Error(JSON.stringify(D.getState()));
          await new Promise((r) => setTimeout(r, 50));
        }
        return D.getState();
      });
      assert.deepEqual(sent, ['open:W-7002']);
      assert.deepEqual(await conversationsByRef('W-7002'), [fresh.conversationId]);

      // The ref survives a reload with its session.
      await page.reload();
      const reloaded = await stateWhere(page, 'resumed', (s) => s.status === 'connected');
      assert.equal(reloaded.sessionId, fresh.sessionId);
      assert.equal(reloaded.externalRef, 'W-7002');
      assert.deepEqual(sent, ['open:W-7002'], 'nothing sent again');
      assert.deepEqual(await page.evaluate(() => window.example.errors), []);
      assertNoProblems(w);
    } finally {
      await w.context.close();
    }
  });

  test("8. a ref another conversation holds, or a malformed one, reaches the page as an error; the chat goes on", async () => {
    const w = await newWatchedContext(browser);
    // The gateway's refusals, on purpose.
    w.expect(/\/v1\/sessions$/, 409);
    w.expect(/\/external-refs$/, 409);
    w.expect(/\/external-refs$/, 400);
    try {
      // Chen's app named the chat first.
      const chen = await demo.openSession({ auth: { token: (await demo.customerLogin('chen')).JWT }, external_ref: 'W-8001' });
      const page = await w.page();
      await page.goto(`${site.url}/?chat=W-8001`);
      const opened = await stateWhere(page, 'the chat open without the ref', (s) => s.status === 'connected');
      await eventually('the error reached the page', async () => (await page.evaluate(() => window.example.errors)).length === 1);
      assert.deepEqual(await page.evaluate(() => window.example.errors), ['external_ref:external_ref_taken']);
      assert.match(await page.locator(tid('problem')).textContent(), /another conversation/);
      assert.equal(opened.externalRef, null);
      assert.equal(await page.locator(tid('external-ref')).textContent(), 'none');
      assert.deepEqual(await conversationsByRef('W-8001'), [chen.conversation_id], "the ref still names chen's conversation");

      // The same on the open session, and a ref that is not one.
      await page.evaluate(() => window.Deskbridge.setExternalRef('W-8001'));
      await page.evaluate(() => window.Deskbridge.setExternalRef('not a ref'));
      const errors = await page.evaluate(() => window.example.errors);
      assert.deepEqual(errors, ['external_ref:external_ref_taken', 'external_ref:external_ref_taken', 'external_ref:invalid_external_ref']);
      const after = await stateOf(page);
      assert.equal(after.status, 'connected');
      assert.equal(after.sessionId, opened.sessionId, 'the chat goes on');
      assert.equal(after.externalRef, null);
      assert.deepEqual(await conversationsByRef('W-8001'), [chen.conversation_id]);
      // Not a string: the page's own mistake, thrown at once.
      const thrown = await page.evaluate(() => {
        try {
          window.Deskbridge.setExternalRef('');
          return null;
        } catch (e) {
          return e.name;
        }
      });
      assert.equal(thrown, 'TypeError');
      assertNoProblems(w);
    } finally {
      await w.context.close();
    }
  });

  test('9. a ref the gateway could not be reached for is kept through a reload, and bound once it answers', async () => {
    const w = await newWatchedContext(browser);
    // The browser's own report of the requests cut below.
    w.expect(/\/external-refs$/, 'net::ERR_FAILED');
    try {
      const page = await w.page();
      await page.goto(`${site.url}/`);
      const opened = await stateWhere(page, 'anonymous chat', (s) => s.status === 'connected');
      // The network between the page and the gateway fails for this call.
      await page.route('**/external-refs', (route) => route.abort('failed'));
      await page.evaluate(() => window.Deskbridge.setExternalRef('W-9001'));
      assert.deepEqual(await page.evaluate(() => window.example.errors), ['external_ref:network_error']);
      assert.equal((await stateOf(page)).externalRef, null);

      // A reload while it still fails: the ref comes back from the stored
      // session (the page does not give it again), and is tried again.
      await page.reload();
      await eventually('tried again after the reload', async () => (await page.evaluate(() => window.example.errors)).includes('external_ref:network_error'));
      assert.equal((await stateOf(page)).sessionId, opened.sessionId);

      // The network is back: a retry binds it.
      await page.unroute('**/external-refs');
      const bound = await stateWhere(page, 'bound', (s) => s.externalRef === 'W-9001');
      assert.equal(bound.sessionId, opened.sessionId);
      assert.deepEqual(await conversationsByRef('W-9001'), [opened.conversationId]);
      assertNoProblems(w);
    } finally {
      await w.context.close();
    }
  });
});
