// The agent console, the web SDK and the demo company site, end to end, in
// Chromium against the real `deskbridge demo`:
//   1. a customer signs in on the demo site; the console shows the new
//      conversation live, and opening it shows getprofile's name and balances;
//   2. the same customer's mobile app (an HTTP session on channel "ios") lands
//      in the same conversation;
//   3. the customer's token expires: the console shows the re-authentication
//      state, the SDK asks the site's contextProvider with needsRefresh, and the
//      card reloads with no agent action;
//   4. refusals: a wrong agent password, an agent (not admin) and the admin
//      view, a request without the CSRF token;
//   5. screenshots, and the console and the site at a 360 px wide window.
// The tests share one demo and run in order: each builds on the last.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startDemo } from '../lib/demo.js';
import { eventually, launch, newWatchedContext, screenshot, SCREENSHOTS } from '../lib/browser.js';

const TTL = Number(process.env.E2E_CUSTOMER_TOKEN_TTL || 15);
const tid = (id) => `[data-testid="${id}"]`;

let demo;
let browser;
let agent; // the admin's console: { context, problems, page }
let customer; // the customer's browser on the demo site
let conversationId;
let profile; // getprofile's data, read through the agent API

async function consoleSignIn(page, username, password) {
  await page.goto(`${demo.gatewayUrl}/console`);
  await page.locator(tid('signin-form')).waitFor();
  await page.locator(tid('signin-username')).fill(username);
  await page.locator(tid('signin-password')).fill(password);
  await page.locator(tid('signin-submit')).click();
}

async function csrfToken(context) {
  const res = await context.request.get(`${demo.gatewayUrl}/console/api/me`);
  assert.equal(res.status(), 200, 'GET /console/api/me with the session cookie');
  return (await res.json()).csrf_token;
}

function assertNoProblems(...watched) {
  const problems = watched.flatMap((w) => w.problems);
  assert.deepEqual(problems, [], 'browser console errors or uncaught exceptions');
}

const card = () => agent.page.locator(tid('customer-card'));
const cardState = () => card().getAttribute('data-state');

describe('agent console, web SDK and demo site', { timeout: 300_000 }, () => {
  before(async () => {
    demo = await startDemo({ ttl: TTL, logPath: join(SCREENSHOTS, 'demo.log') });
    browser = await launch();
    agent = await newWatchedContext(browser);
    agent.page = await agent.page();
    customer = await newWatchedContext(browser);
    customer.page = await customer.page();
  });

  after(async () => {
    await browser?.close();
    await demo?.stop();
  });

  test('1. a customer signs in on the demo site; the console shows the conversation live, with the getprofile card', async () => {
    const page = agent.page;
    await page.goto(`${demo.gatewayUrl}/console`);
    await page.locator(tid('signin-form')).waitFor();
    await screenshot(page, 'console-signin');
    await consoleSignIn(page, demo.agent.username, demo.agent.password);
    await page.locator(tid('agent-name')).filter({ hasText: demo.agent.username }).waitFor();
    assert.equal(await page.locator(tid('agent-role')).textContent(), 'admin');
    assert.ok(await page.locator(tid('nav-admin')).isVisible(), 'an admin sees the Admin link');
    await page.locator(`${tid('live-status')}[data-state="live"]`).waitFor();
    const before = await page.locator(tid('conversation-item')).count();

    // The customer, in another browser context, signs in on the company's site.
    const site = customer.page;
    await site.goto(`${demo.backendUrl}/`);
    await site.locator(`${tid('chat-open-anonymous')}:not([disabled])`).waitFor();
    await site.locator(tid('site-username')).fill('alice');
    await site.locator(tid('site-password')).fill(demo.password('alice'));
    await site.locator(tid('site-signin-submit')).click();
    await site.locator(tid('site-welcome')).filter({ hasText: 'alice' }).waitFor();
    await site.locator(`${tid('chat-status')}[data-status="connected"]`).waitFor();
    await site.locator(`${tid('chat-auth')}[data-authenticated="true"]`).waitFor();
    conversationId = (await site.locator(tid('chat-conversation')).textContent()).trim();
    assert.match(conversationId, /^cnv_/);
    const sub = (await site.locator(tid('chat-auth')).textContent()).trim();
    assert.match(sub, /^cus_/, 'the chat panel shows the JWT subject');

    // Live: no reload on the agent's side.
    const item = page.locator(`${tid('conversation-item')}[data-conversation-id="${conversationId}"]`);
    await item.waitFor();
    assert.equal(await page.locator(tid('conversation-item')).count(), before + 1);
    assert.equal(await item.locator(`${tid('channel-badge')}[data-channel="web"]`).count(), 1);
    assert.equal(await item.locator(tid('auth-pill')).getAttribute('data-auth-state'), 'valid');
    assert.equal(await page.locator(tid('conversation-item')).first().getAttribute('data-conversation-id'), conversationId, 'newest activity first');

    // What getprofile answers, through the agent API with the console's cookie.
    const res = await agent.context.request.post(`${demo.gatewayUrl}/v1/conversations/${conversationId}/actions/getprofile`, {
      headers: { 'x-csrf-token': await csrfToken(agent.context) },
    });
    assert.equal(res.status(), 200, `getprofile: ${await res.text()}`);
    profile = (await res.json()).data;
    assert.equal(profile.customer_id, sub);
    assert.ok(profile.accounts.length > 0);

    await item.locator('a').click();
    await eventually('the customer card is ready', async () => (await cardState()) === 'ready');
    assert.equal((await page.locator(tid('customer-name')).textContent()).trim(), profile.name);
    assert.equal((await page.locator(tid('customer-tier')).textContent()).trim().toLowerCase(), profile.tier.toLowerCase());
    const balances = await page.locator(tid('account-balance')).allTextContents();
    const expected = profile.accounts.map((a) =>
      new Intl.NumberFormat('en-US', { style: 'currency', currency: a.balance.currency }).format(Number(a.balance.amount)),
    );
    assert.deepEqual(balances.map((b) => b.trim()), expected, 'balances formatted by currency');
    assert.equal((await page.locator(tid('detail-conversation-id')).textContent()).trim(), conversationId);
    // The list learnt the customer's name from the card.
    await item.locator(tid('conversation-name')).filter({ hasText: profile.name }).waitFor();

    await screenshot(page, 'console-conversation');
    await screenshot(site, 'demo-site');
    assertNoProblems(agent, customer);
  });

  test("2. the customer's mobile app (channel ios) lands in the same conversation", async () => {
    const login = await demo.customerLogin('alice');
    assert.ok(login.JWT, 'customer_authenticate gives a JWT');
    const res = await fetch(`${demo.gatewayUrl}/v1/sessions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-deskbridge-app-key': demo.config.app_key },
      body: JSON.stringify({
        channel: 'ios',
        connection: demo.config.connection,
        auth: { token: login.JWT, expires_in: Number(login.expires_in) },
      }),
    });
    const body = await res.json();
    assert.equal(res.status, 201, JSON.stringify(body));
    assert.equal(body.conversation_id, conversationId, 'one conversation per customer, across channels');
    assert.equal(body.authenticated, true);

    const page = agent.page;
    const item = page.locator(`${tid('conversation-item')}[data-conversation-id="${conversationId}"]`);
    await item.locator(`${tid('channel-badge')}[data-channel="ios"]`).waitFor();
    assert.equal(await item.locator(`${tid('channel-badge')}[data-channel="web"]`).count(), 1);
    // The open conversation's timeline shows both channels' sessions.
    await page.locator(`${tid('session-item')}[data-channel="ios"]`).waitFor();
    assert.ok((await page.locator(`${tid('session-item')}[data-channel="web"]`).count()) >= 1);
    assert.ok((await page.locator(`${tid('timeline-item')}[data-kind="session_opened"]`).count()) >= 2);
    assert.equal(await cardState(), 'ready', 'a new session does not disturb the card');
    assertNoProblems(agent, customer);
  });

  test("3. the customer's token expires: the console waits, the SDK asks with needsRefresh, the card reloads by itself", async () => {
    const page = agent.page;
    const site = customer.page;
    const refreshesBefore = Number(await site.locator(tid('chat-refreshes')).getAttribute('data-count'));
    // Hold the site's answer to needsRefresh, so the waiting state stays on screen.
    await site.locator(tid('chat-hold')).check();

    await eventually('the card shows the re-authentication state', async () => (await cardState()) === 'waiting', (TTL * 2 + 15) * 1000);
    const waiting = page.locator(tid('card-waiting'));
    assert.match(await waiting.textContent(), /Waiting for the customer's app to refresh the login/);
    await page.locator(`${tid('conversation-item')}[data-conversation-id="${conversationId}"] ${tid('auth-pill')}[data-auth-state="expired"]`).waitFor();
    // The SDK called contextProvider(callback, true): the site shows it held.
    await site.locator(tid('chat-refresh-held')).waitFor();
    await screenshot(page, 'console-waiting');
    await screenshot(site, 'demo-site-held');

    // Let the refresh through; the agent does nothing.
    await site.locator(tid('chat-hold')).uncheck();
    await eventually('the site counts one more refresh', async () => Number(await site.locator(tid('chat-refreshes')).getAttribute('data-count')) > refreshesBefore);
    await eventually('the card reloads by itself', async () => (await cardState()) === 'ready', 20_000);
    assert.equal((await page.locator(tid('customer-name')).textContent()).trim(), profile.name);
    await page.locator(`${tid('conversation-item')}[data-conversation-id="${conversationId}"] ${tid('auth-pill')}[data-auth-state="valid"]`).waitFor();
    await page.locator(`${tid('timeline-item')}[data-kind="authentication_required"]`).first().waitFor();
    assert.equal(await site.locator(`${tid('chat-status')}`).getAttribute('data-status'), 'connected');
    assertNoProblems(agent, customer);
  });

  test('4. refusals: a wrong password, an agent in the admin view, a request without the CSRF token', async () => {
    const viewer = await newWatchedContext(browser);
    try {
      const page = await viewer.page();

      // A wrong password is refused, and says so.
      viewer.expect(/\/console\/api\/login$/, 401);
      await consoleSignIn(page, demo.agent.username, `${demo.agent.password}-wrong`);
      await page.locator(tid('signin-error')).filter({ hasText: 'Wrong username or password' }).waitFor();
      assert.equal(await page.locator('#app').isVisible(), false, 'still signed out');
      const me = await viewer.context.request.get(`${demo.gatewayUrl}/console/api/me`);
      assert.equal(me.status(), 401, 'no session cookie after a refused sign-in');

      // An agent with the role "agent", signed in with the keyboard only.
      const password = `viewer-${Math.random().toString(36).slice(2)}-pw`;
      demo.addAgent('viewer', 'agent', password);
      await page.locator(tid('signin-username')).focus();
      await page.keyboard.press('Control+A');
      await page.keyboard.type('viewer');
      await page.keyboard.press('Tab');
      await page.keyboard.press('Control+A');
      await page.keyboard.type(password);
      await page.keyboard.press('Enter');
      await page.locator(tid('agent-name')).filter({ hasText: 'viewer' }).waitFor();
      assert.equal(await page.locator(tid('agent-role')).textContent(), 'agent');
      assert.equal(await page.locator(tid('nav-admin')).isVisible(), false, 'no Admin link for an agent');
      await page.goto(`${demo.gatewayUrl}/console#/admin`);
      await page.locator(tid('admin-forbidden')).waitFor();
      assert.equal(await page.locator(tid('connections')).isVisible(), false);
      for (const path of ['/v1/connections', '/v1/audit']) {
        const res = await viewer.context.request.get(`${demo.gatewayUrl}${path}`);
        assert.equal(res.status(), 403, `${path} as an agent`);
        assert.equal((await res.json()).type, 'urn:deskbridge:problem:forbidden');
      }

      // The agent can still work: keyboard to a conversation, Enter opens it.
      await page.goto(`${demo.gatewayUrl}/console#/`);
      await page.locator(`${tid('conversation-item')}[data-conversation-id="${conversationId}"]`).waitFor();
      let reached = false;
      for (let i = 0; i < 25 && !reached; i++) {
        await page.keyboard.press('Tab');
        reached = await page.evaluate((id) => document.activeElement?.closest('[data-conversation-id]')?.dataset.conversationId === id, conversationId);
      }
      assert.ok(reached, 'a conversation is reachable with Tab');
      await page.keyboard.press('Enter');
      await eventually('the card opens from the keyboard', async () => (await page.locator(tid('customer-card')).getAttribute('data-state')) === 'ready', 20_000);

      // CSRF: the cookie alone does not change state.
      const action = `${demo.gatewayUrl}/v1/conversations/${conversationId}/actions/getprofile`;
      for (const headers of [{}, { 'x-csrf-token': 'not-the-token' }]) {
        const res = await viewer.context.request.post(action, { headers });
        assert.equal(res.status(), 403, `getprofile with ${JSON.stringify(headers)}`);
        assert.equal((await res.json()).type, 'urn:deskbridge:problem:csrf_token_invalid');
      }
      const logout = await viewer.context.request.post(`${demo.gatewayUrl}/console/api/logout`);
      assert.equal(logout.status(), 403, 'logout without the CSRF token');
      const token = await csrfToken(viewer.context); // still signed in
      const ok = await viewer.context.request.post(action, { headers: { 'x-csrf-token': token } });
      assert.equal(ok.status(), 200, 'with the CSRF token');

      // Signing out ends the session.
      await page.locator(tid('signout')).click();
      await page.locator(tid('signin-form')).waitFor();
      viewer.expect(/\/console\/api\/me$/, 401);
      const gone = await viewer.context.request.get(`${demo.gatewayUrl}/console/api/me`);
      assert.equal(gone.status(), 401, 'signed out');
      assertNoProblems(viewer, agent, customer);
    } finally {
      await viewer.context.close();
    }
  });

  test('admin view: probe a connection step by step; the audit log filtered by agent and by conversation', async () => {
    const page = agent.page;
    await page.locator(tid('nav-admin')).click();
    const connection = page.locator(`${tid('connection')}[data-name="${demo.config.connection}"]`);
    await connection.waitFor();
    await connection.locator(tid('probe-button')).click();
    await connection.locator(tid('probe-summary')).waitFor();
    const steps = connection.locator(tid('probe-step'));
    assert.deepEqual(await steps.evaluateAll((els) => els.map((e) => e.dataset.step)), ['system_token', 'base_url']);
    for (const latency of await connection.locator(tid('probe-latency')).allTextContents()) assert.match(latency, /^\d+ ms$/);
    assert.equal(await connection.locator(tid('probe-summary')).getAttribute('data-ok'), 'true');

    // Every agent's token, with when it expires (never the token itself).
    await page.locator(tid('token-row')).first().waitFor();
    const tokens = await page
      .locator(tid('token-row'))
      .evaluateAll((els) => els.map((e) => [e.dataset.agent, e.dataset.state, e.querySelector('[data-testid=token-expiry]').textContent]));
    const admins = tokens.filter(([name]) => name === demo.agent.username);
    assert.equal(admins.length, 1, JSON.stringify(tokens));
    assert.equal(admins[0][1], 'ok');
    assert.match(admins[0][2], /^in \d+ days$/);
    assert.ok(!(await page.locator(tid('tokens-table')).textContent()).includes('dbg_'), 'no token value on the page');

    await page.locator(tid('audit-agent')).fill('viewer');
    await page.locator(tid('audit-apply')).click();
    await eventually('audit rows for viewer', async () => {
      const agents = await page.locator(tid('audit-row')).evaluateAll((els) => els.map((e) => e.dataset.agent));
      return agents.length > 0 && agents.every((a) => a === 'viewer');
    });
    await page.locator(tid('audit-agent')).fill('');
    await page.locator(tid('audit-conversation')).fill(conversationId);
    await page.locator(tid('audit-apply')).click();
    await eventually('audit rows for the conversation, by both agents (and the customer on the demo site)', async () => {
      const rows = await page.locator(tid('audit-row')).evaluateAll((els) => els.map((e) => [e.dataset.conversationId, e.dataset.agent, e.dataset.caller]));
      const agents = new Set(rows.filter(([, , caller]) => caller === 'agent').map(([, a]) => a));
      return rows.length > 0 && rows.every(([c]) => c === conversationId) && agents.size === 2;
    });
    // Each record names the trace of the request that ran it.
    for (const trace of await page.locator(tid('audit-row')).evaluateAll((els) => els.map((e) => e.dataset.traceId))) {
      assert.match(trace, /^[0-9a-f]{32}$/);
    }
    await page.locator(tid('audit-reset')).click();
    await eventually('all audit rows again', async () => {
      const agents = await page.locator(tid('audit-row')).evaluateAll((els) => els.map((e) => e.dataset.agent));
      return (await page.locator(tid('audit-agent')).inputValue()) === '' && agents.includes('viewer') && agents.includes(demo.agent.username);
    });
    await screenshot(page, 'console-admin');
    assertNoProblems(agent);
  });

  test("errors from the company's API read as a sentence, never as JSON", async () => {
    const page = agent.page;
    await page.goto(`${demo.gatewayUrl}/console#/c/${conversationId}`);
    await eventually('the card is ready', async () => (await cardState()) === 'ready', 20_000);
    // The company refuses the call: the gateway's 502 backend_error problem, as the spec gives it.
    const action = `**/v1/conversations/${conversationId}/actions/getprofile`;
    agent.expect(/\/actions\/getprofile$/, 502);
    await page.route(action, (route) =>
      route.fulfill({
        status: 502,
        contentType: 'application/problem+json',
        headers: { 'x-trace-id': '0b8e41d2c39f4a7e96d15f0a2c7b83e4' },
        body: JSON.stringify({
          type: 'urn:deskbridge:problem:backend_error',
          title: 'backend error',
          status: 502,
          detail: "the company's API answered 403",
          backend_status: 403,
          backend_error: 'invalid_api_key',
        }),
      }),
    );
    await page.locator(tid('card-refresh')).click();
    await eventually('the card shows the error', async () => (await cardState()) === 'error');
    const text = await page.locator(tid('card-error')).textContent();
    assert.match(text, /The company's API refused the request: it answered HTTP 403 \(invalid api key\)\./);
    assert.doesNotMatch(text, /[{}"]|urn:deskbridge/, 'no JSON on screen');
    // The trace to quote, so an operator finds the call in the logs and the audit log.
    assert.match(await page.locator(tid('card-trace')).textContent(), /Trace 0b8e41d2c39f4a7e96d15f0a2c7b83e4/);
    assert.equal(await page.locator(tid('card-error')).getAttribute('role'), 'alert');
    await page.unroute(action);
    await page.locator(tid('card-retry')).click();
    await eventually('the card recovers', async () => (await cardState()) === 'ready');
    assertNoProblems(agent);
  });

  test('5. screenshots, and a 360 px wide window', async () => {
    const narrow = await newWatchedContext(browser, { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2 });
    try {
      const page = await narrow.page();
      const noSideScroll = async (what) => {
        const width = await page.evaluate(() => document.documentElement.scrollWidth);
        const wide = await page.evaluate(() => [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > 361).map((e) => `${e.tagName.toLowerCase()}.${e.className}`).slice(0, 5));
        assert.ok(width <= 360, `${what}: the page is ${width} px wide in a 360 px window (${wide.join(', ')})`);
      };
      await consoleSignIn(page, demo.agent.username, demo.agent.password);
      await page.locator(`${tid('conversation-item')}[data-conversation-id="${conversationId}"]`).waitFor();
      // A reload keeps the agent signed in (the cookie, and GET /console/api/me).
      await page.reload();
      await page.locator(tid('agent-name')).filter({ hasText: demo.agent.username }).waitFor();
      await page.locator(`${tid('conversation-item')}[data-conversation-id="${conversationId}"]`).waitFor();
      await noSideScroll('conversation list');
      await screenshot(page, 'console-narrow-list');
      await page.locator(`${tid('conversation-item')}[data-conversation-id="${conversationId}"] a`).click();
      await eventually('the card is ready', async () => (await page.locator(tid('customer-card')).getAttribute('data-state')) === 'ready', 20_000);
      assert.equal(await page.locator(tid('conversation-list')).isVisible(), false, 'one pane at a time');
      await noSideScroll('conversation');
      await screenshot(page, 'console-narrow-conversation');
      await page.goto(`${demo.gatewayUrl}/console#/admin`);
      await page.locator(tid('connection')).first().waitFor();
      await noSideScroll('admin');

      const site = await narrow.page();
      await site.goto(`${demo.backendUrl}/`);
      await site.locator(`${tid('chat-open-anonymous')}:not([disabled])`).waitFor();
      const width = await site.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 360, `demo site: ${width} px wide in a 360 px window`);
      // A visitor can open the chat anonymously before signing in.
      await site.locator(tid('chat-open-anonymous')).click();
      await site.locator(`${tid('chat-status')}[data-status="connected"]`).waitFor();
      assert.equal(await site.locator(tid('chat-auth')).getAttribute('data-authenticated'), 'false');
      const anonymous = (await site.locator(tid('chat-conversation')).textContent()).trim();
      await agent.page.locator(tid('nav-conversations')).click();
      const anonymousItem = agent.page.locator(`${tid('conversation-item')}[data-conversation-id="${anonymous}"]`);
      await anonymousItem.waitFor();
      assert.equal(await anonymousItem.locator(tid('auth-pill')).getAttribute('data-auth-state'), 'none');
      await screenshot(site, 'demo-site-narrow');

      // Then signs in: Deskbridge.setCustomer moves the chat into bruno's conversation.
      await site.locator(tid('site-username')).fill('bruno');
      await site.locator(tid('site-password')).fill(demo.password('bruno'));
      await site.locator(tid('site-signin-submit')).click();
      await site.locator(`${tid('chat-auth')}[data-authenticated="true"]`).waitFor();
      const bruno = (await site.locator(tid('chat-conversation')).textContent()).trim();
      assert.notEqual(bruno, anonymous, 'the anonymous conversation is folded into the customer\'s');
      await agent.page.locator(`${tid('conversation-item')}[data-conversation-id="${bruno}"]`).waitFor();
      await eventually('the anonymous conversation leaves the list', async () => (await anonymousItem.count()) === 0);

      // A reload keeps the customer signed in (the site's session) and the chat in
      // the same session (sessionStorage), then signing out ends both.
      const session = await site.evaluate(() => window.Deskbridge.getState().sessionId);
      await site.reload();
      await site.locator(`${tid('chat-auth')}[data-authenticated="true"]`).waitFor();
      await site.locator(`${tid('chat-status')}[data-status="connected"]`).waitFor();
      assert.equal((await site.locator(tid('chat-conversation')).textContent()).trim(), bruno);
      assert.equal(await site.evaluate(() => window.Deskbridge.getState().sessionId), session, 'the same session after a reload');
      await site.locator(tid('site-signout')).click();
      await site.locator(tid('site-signin-form')).waitFor();
      assert.equal(await site.locator(tid('chat-status')).getAttribute('data-status'), 'idle');
      assert.equal(await site.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith('deskbridge.')).length), 0, 'clear() forgets the session');
      narrow.expect(/\/demo\/token$/, 401);
      const token = await site.evaluate(() => fetch('/demo/token', { method: 'POST' }).then((r) => r.status));
      assert.equal(token, 401, 'the site session ended');
      assertNoProblems(narrow, agent, customer);
    } finally {
      await narrow.context.close();
    }
    for (const name of ['console-signin', 'console-conversation', 'console-waiting', 'console-admin', 'console-narrow-list', 'console-narrow-conversation', 'demo-site', 'demo-site-held', 'demo-site-narrow']) {
      const path = join(SCREENSHOTS, `${name}.png`);
      assert.ok(existsSync(path) && statSync(path).size > 5_000, `screenshot ${name}.png`);
    }
  });

  test('6. the SDK: a provider that never answers holds nothing up for good; refused and missing logins are asked for again', async () => {
    const visitor = await newWatchedContext(browser);
    try {
      const site = await visitor.page();
      await site.goto(`${demo.backendUrl}/`);
      await site.locator(`${tid('chat-open-anonymous')}:not([disabled])`).waitFor();
      await site.locator(tid('site-username')).fill('alice');
      await site.locator(tid('site-password')).fill(demo.password('alice'));
      await site.locator(tid('site-signin-submit')).click();
      await site.locator(`${tid('chat-auth')}[data-authenticated="true"]`).waitFor();
      // The refused token below is the gateway's 401, on purpose.
      visitor.expect(/\/v1\/sessions$/, 401);

      const seen = await site.evaluate(async () => {
        const config = await (await fetch('/demo/config.json')).json();
        const D = window.Deskbridge;
        const options = (contextProvider) => ({
          gateway: config.gateway_url,
          appKey: config.app_key,
          channel: config.channel || 'web',
          connection: config.connection,
          contextProvider,
        });
        const login = (callback) =>
          fetch('/demo/token', { method: 'POST' })
            .then((r) => r.json())
            .then((t) => callback({ auth: { token: t.JWT, expiresIn: Number(t.expires_in) } }));
        const never = () => {};
        const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
        const until = async (what, ok, ms = 15_000) => {
          const end = Date.now() + ms;
          while (!ok()) {
            if (Date.now() > end) throw new Error(`timed out: ${what} (${JSON.stringify(D.getState())})`);
            await sleep(50);
          }
        };
        const authenticated = () => D.getState().authenticated && D.getState().status === 'connected';
        let errors = [];
        D.on('error', (e) => errors.push(`${e.where}:${e.code}`));
        const seen = {};

        // A provider that never calls back, then clear(): the next load is not held up.
        D.clear();
        D.load(options(never));
        await sleep(300);
        D.clear();
        D.load(options(login));
        await until('a load after a stuck one', authenticated);

        // setCustomer with a new provider ends the wait on the old one.
        D.clear();
        D.load(options(never));
        await sleep(300);
        D.setCustomer({ contextProvider: login });
        await until('setCustomer after a stuck provider', authenticated);

        seen.stuckErrors = errors;

        // A token the gateway refuses at open: the next try asks for a fresh one.
        D.clear();
        errors = [];
        const asked = [];
        D.load(options((callback, needsRefresh) => {
          asked.push(needsRefresh);
          return needsRefresh ? login(callback) : callback({ auth: { token: 'not-a-jwt' } });
        }));
        await until('a refused token replaced by a fresh one', authenticated);
        seen.asked = asked;
        seen.refusedErrors = errors;

        // No token at load: the chat opens anonymously, says no_token, and the
        // login joins when the page has one (asked again after 4 s).
        D.clear();
        errors = [];
        let give = false;
        D.load(options((callback) => (give ? login(callback) : callback(null))));
        await until('an anonymous session meanwhile', () => D.getState().status === 'connected');
        seen.anonymous = D.getState().authenticated;
        give = true;
        await until('the login joins later', authenticated);
        seen.missingErrors = errors;
        D.clear();
        return seen;
      });
      assert.deepEqual(seen.stuckErrors, [], 'a replaced provider is not an error');
      assert.deepEqual(seen.asked, [false, true], 'asked again with needsRefresh after the refusal');
      assert.deepEqual(seen.refusedErrors, ['open:invalid_customer_token']);
      assert.equal(seen.anonymous, false);
      assert.deepEqual(seen.missingErrors, ['open:no_token']);
      assertNoProblems(visitor);
    } finally {
      await visitor.context.close();
    }
  });
});
