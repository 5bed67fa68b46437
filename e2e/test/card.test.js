// The embeddable customer card in a third-party desk, end to end, in
// Chromium against the real `deskbridge demo --card-origin` (issue 20):
//   1. the sample desk (e2e/desk-host, served by this harness on its own
//      origin) frames /card and hands it the agent's token and its ticket id
//      (external_ref) by postMessage; the card finds alice's conversation by
//      that id and shows her profile, and tells the desk;
//   2. the agent runs an action in the card (gettransactions, through its
//      form) and the desk hears of it;
//   3. a ticket that names no conversation yet says so, and shows bruno's
//      card by itself as soon as his chat names the ticket;
//   4. origins: a desk whose origin is not configured gets no card; one that
//      claims a configured origin it does not have is refused by the
//      browser (frame-ancestors); another origin's frame posting a forged
//      `deskbridge:open` is ignored; the card opened on its own does nothing;
//   5. the company's page (examples/web-sdk, the web SDK) hands its chat
//      widget's id to the SDK, at load (`externalRef`) and later
//      (`setExternalRef`): the desk's card finds that customer by it;
//   6. the same desk with the card as the gateway's custom element
//      (<deskbridge-card>, e2e/desk-host/element.html): a ticket sets its
//      external-ref, the card's state and actions come as DOM events, the
//      token given as a property is nowhere in the DOM, and a token
//      attribute opens the card again.
// The tests share one demo and run in order.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { freePort, startDemo } from '../lib/demo.js';
import { startDeskHost } from '../lib/desk-host.js';
import { eventually, launch, newWatchedContext, screenshot, SCREENSHOTS } from '../lib/browser.js';
import { startSite } from '../lib/site.js';

const tid = (id) => `[data-testid="${id}"]`;

let demo;
let browser;
let desk; // the configured desk's server
let stranger; // the same desk page on an origin that is not configured
let agent; // the browser of an agent at the desk
let token;
let alice; // her conversation
let site; // the company's own web site, with the web SDK

const cardFrame = (page) => page.frameLocator(tid('host-card-frame'));
const hostState = (page) => page.locator(tid('host-card-state')).getAttribute('data-state');

function assertNoProblems(...watched) {
  assert.deepEqual(watched.flatMap((w) => w.problems), [], 'browser console errors or uncaught exceptions');
}

async function jwtOf(username) {
  return (await demo.customerLogin(username)).JWT;
}

describe('the customer card inside a third-party desk', { timeout: 300_000 }, () => {
  before(async () => {
    const [deskPort, strangerPort, sitePort] = [await freePort(), await freePort(), await freePort()];
    const deskOrigin = `http://127.0.0.1:${deskPort}`;
    demo = await startDemo({
      ttl: 600,
      logPath: join(SCREENSHOTS, 'demo-card.log'),
      cardOrigins: [deskOrigin],
      allowOrigins: [`http://127.0.0.1:${sitePort}`],
    });
    site = await startSite(demo, sitePort);
    token = demo.agentToken('desk-bot-agent', 'agent');
    const config = {
      gateway: demo.gatewayUrl,
      token,
      connection: 'acme',
      tickets: [
        { ref: 'HD-1001', subject: 'Card payment declined' },
        { ref: 'HD-2002', subject: 'Question about a transfer' },
        // Chats of the company's web site: the widget's chat id is the ticket's.
        { ref: 'HD-3003', subject: 'Web chat: card limit' },
        { ref: 'HD-4004', subject: 'Web chat: a new payee' },
      ],
      forged_ref: 'HD-1001',
    };
    desk = await startDeskHost(deskPort, config);
    stranger = await startDeskHost(strangerPort, config);
    browser = await launch();
    agent = await newWatchedContext(browser, { viewport: { width: 1280, height: 900 } });
    agent.page = await agent.page();
    // Alice's chat (her app, say) names the desk's ticket as it opens.
    alice = await demo.openSession({ auth: { token: await jwtOf('alice') }, external_ref: 'HD-1001' });
  });

  after(async () => {
    await browser?.close();
    await desk?.close();
    await stranger?.close();
    await site?.stop();
    await demo?.stop();
  });

  test('1. the desk loads the card by its ticket id and sees the profile', async () => {
    const page = agent.page;
    await page.goto(desk.origin);
    const card = cardFrame(page);
    await card.locator(`${tid('customer-card')}[data-state="ready"]`).waitFor();
    assert.equal(await card.locator(tid('customer-name')).textContent(), 'Alice Martin');
    assert.equal(await card.locator(tid('detail-conversation-id')).textContent(), alice.conversation_id);
    assert.match(await card.locator(tid('detail-external-refs')).textContent(), /HD-1001/);
    assert.equal(await card.locator(tid('card-ref')).textContent(), 'HD-1001');
    assert.ok((await card.locator(tid('account-row')).count()) > 0, 'the accounts show');
    // The console's own card: no way back to a conversation list inside a desk,
    // no admin link, and nothing left out shows as "null".
    assert.equal(await card.locator('.back-link').count(), 0);
    assert.doesNotMatch(await card.locator('#detail-head').textContent(), /null/);
    // The desk heard what the card shows.
    await eventually('the desk hears the card is ready', async () => (await hostState(page)) === 'ready');
    assert.equal(await page.locator(tid('host-card-customer')).textContent(), 'Alice Martin');
    // The desk sized its frame to the card.
    const height = await page.locator(tid('host-card-frame')).evaluate((f) => f.getBoundingClientRect().height);
    assert.ok(height > 300, `frame height ${height}`);
    await screenshot(page, 'card-in-desk');
    assertNoProblems(agent);
  });

  test('2. the agent runs an action in the card, and the desk hears of it', async () => {
    const page = agent.page;
    const card = cardFrame(page);
    const tx = card.locator(`${tid('action-card')}[data-action="gettransactions"]`);
    await tx.locator(`${tid('action-field')}[data-field="account_id"]`).fill('acc-1001');
    await tx.locator(tid('action-run')).click();
    await tx.locator(tid('result-table')).first().waitFor();
    assert.ok((await tx.locator(tid('result-row')).count()) > 0, 'transactions show');
    await eventually('the desk hears of the action', async () => (await page.locator(tid('host-card-action')).textContent()) === 'gettransactions: ok');
    // Audited under the token's agent, as in the console.
    const res = await fetch(`${demo.gatewayUrl}/v1/audit?conversation=${alice.conversation_id}`, {
      headers: { authorization: `Bearer ${demo.agentToken('card-auditor', 'admin')}` },
    });
    const records = (await res.json()).records;
    assert.ok(records.some((r) => r.action === 'gettransactions' && r.agent === 'desk-bot-agent' && r.outcome === 'ok'), JSON.stringify(records));
    assertNoProblems(agent);
  });

  test('3. a ticket with no conversation yet waits, then shows it live', async () => {
    const page = agent.page;
    const card = cardFrame(page);
    await page.locator(`${tid('host-ticket')}[data-ref="HD-2002"]`).click();
    await card.locator(`${tid('card-notice')}[data-state="not_found"]`).waitFor();
    assert.match(await card.locator(tid('card-notice')).textContent(), /No conversation is linked to HD-2002 yet/);
    await eventually('the desk hears not_found', async () => (await hostState(page)) === 'not_found');
    // Bruno's chat names the ticket: the card finds it by itself.
    await demo.openSession({ auth: { token: await jwtOf('bruno') }, external_ref: 'HD-2002' });
    await card.locator(`${tid('customer-card')}[data-state="ready"]`).waitFor();
    assert.equal(await card.locator(tid('customer-name')).textContent(), 'Bruno Keller');
    // And back to alice's ticket.
    await page.locator(`${tid('host-ticket')}[data-ref="HD-1001"]`).click();
    await eventually('alice again', async () => (await card.locator(tid('customer-name')).textContent()) === 'Alice Martin');
    assertNoProblems(agent);
  });

  test('4. an origin that is not the configured desk gets no card, and cannot drive one', async () => {
    // Refusals log console errors on purpose: a context of its own, unwatched.
    const context = await browser.newContext();
    try {
      const page = await context.newPage();

      // (a) a desk whose origin is not configured: the gateway refuses the card.
      const refused = page.waitForResponse((r) => r.url().startsWith(`${demo.gatewayUrl}/card`));
      await page.goto(stranger.origin);
      assert.equal((await refused).status(), 403);
      await assertNoCard(page);

      // (b) the same stranger claiming the configured desk's origin: the page
      // is served for that origin alone, and the browser will not frame it here.
      const claimed = page.waitForResponse((r) => r.url().startsWith(`${demo.gatewayUrl}/card`));
      await page.goto(`${stranger.origin}/?claim=${encodeURIComponent(desk.origin)}`);
      const response = await claimed;
      assert.equal(response.status(), 200);
      assert.match(response.headers()['content-security-policy'], new RegExp(`frame-ancestors ${desk.origin};`));
      await assertNoCard(page);

      // (c) on the configured desk, another origin's frame posts a forged
      // open with a valid token: the card takes orders from its parent only.
      await page.goto(`${desk.origin}/?open=0&intruder=${encodeURIComponent(`${stranger.origin}/intruder.html`)}`);
      const card = cardFrame(page);
      await card.locator(tid('card-notice')).waitFor({ state: 'attached' });
      await page.locator('body[data-intruder="posted"]').waitFor({ state: 'attached' });
      // The last forged message came 200 ms before: had the card taken any,
      // it would be signing in or showing alice by now.
      await page.waitForTimeout(500);
      assert.equal(await card.locator(tid('card-notice')).textContent(), 'Waiting for the desk…');
      assert.equal(await card.locator(tid('card-ref')).textContent(), '');
      assert.equal(await card.locator(tid('customer-card')).count(), 0);
      assert.equal(await hostState(page), 'loading');

      // (d) the card opened on its own, outside any desk, does nothing.
      await page.goto(`${demo.gatewayUrl}/card?host=${encodeURIComponent(desk.origin)}`);
      await page.locator(`${tid('card-notice')}[data-state="standalone"]`).waitFor();
    } finally {
      await context.close();
    }
  });

  test("5. the company's page hands its chat id to the web SDK; the desk's card finds the customer by it", async () => {
    const customer = await newWatchedContext(browser);
    try {
      // Chen chats on the company's site; the chat widget's id is HD-3003.
      const shop = await customer.page();
      await shop.goto(`${site.url}/?chat=HD-3003`);
      await shop.locator(`${tid('signin')}:not([hidden])`).waitFor();
      await shop.locator(tid('username')).fill('chen');
      await shop.locator(tid('password')).fill(demo.password('chen'));
      await shop.locator(tid('signin-submit')).click();
      await shop.locator(`${tid('status')}[data-status="connected"][data-login="authenticated"]`).waitFor();
      await eventually('the SDK bound the ref', async () => (await shop.locator(tid('external-ref')).textContent()) === 'HD-3003');
      const chen = await shop.evaluate(() => window.Deskbridge.getState());

      // The desk opens the ticket of that chat: the card shows chen.
      const page = agent.page;
      const card = cardFrame(page);
      await page.locator(`${tid('host-ticket')}[data-ref="HD-3003"]`).click();
      await eventually('chen in the card', async () => (await card.locator(tid('customer-name')).textContent()) === 'Chen Wei');
      assert.equal(await card.locator(tid('detail-conversation-id')).textContent(), chen.conversationId);
      assert.equal(await card.locator(tid('card-ref')).textContent(), 'HD-3003');
      await eventually('the desk hears chen', async () => (await page.locator(tid('host-card-customer')).textContent()) === 'Chen Wei');
      await screenshot(page, 'card-by-sdk-ref');

      // A ticket whose chat learns its id only later: the card waits, and
      // fills in as soon as the page hands the id to the SDK.
      await page.locator(`${tid('host-ticket')}[data-ref="HD-4004"]`).click();
      await card.locator(`${tid('card-notice')}[data-state="not_found"]`).waitFor();
      await shop.evaluate(() => window.Deskbridge.setExternalRef('HD-4004'));
      await card.locator(`${tid('customer-card')}[data-state="ready"]`).waitFor();
      assert.equal(await card.locator(tid('customer-name')).textContent(), 'Chen Wei');
      assert.equal(await card.locator(tid('card-ref')).textContent(), 'HD-4004');
      assert.match(await card.locator(tid('detail-external-refs')).textContent(), /HD-3003[\s\S]*HD-4004|HD-4004[\s\S]*HD-3003/);
      assert.deepEqual(await shop.evaluate(() => window.example.errors), []);
      assertNoProblems(agent, customer);
    } finally {
      await customer.context.close();
    }
  });

  test('6. <deskbridge-card>: attributes open the card, its news comes as DOM events, the token stays out of the DOM', async () => {
    const page = agent.page;
    // Step (d) below: a token the gateway refuses, on purpose.
    agent.expect(/\/v1\/me$/, 401);
    await page.goto(`${desk.origin}/element.html`);
    const card = page.frameLocator(`${tid('host-card')} iframe`);
    await card.locator(`${tid('customer-card')}[data-state="ready"]`).waitFor();
    assert.equal(await card.locator(tid('customer-name')).textContent(), 'Alice Martin');
    assert.equal(await card.locator(tid('card-ref')).textContent(), 'HD-1001');
    await eventually('the desk hears ready (a DOM event)', async () => (await hostState(page)) === 'ready');
    assert.equal(await page.locator(tid('host-card-customer')).textContent(), 'Alice Martin');
    assert.equal((await page.locator(tid('host-card')).evaluate((el) => el.state)).customer_name, 'Alice Martin');
    // The element sized its frame to the card.
    const height = await page.locator(`${tid('host-card')} iframe`).evaluate((f) => f.getBoundingClientRect().height);
    assert.ok(height > 300, `frame height ${height}`);
    // (a) The token, given as a property, is in no attribute nor in the page's markup.
    assert.equal(await page.locator(tid('host-card')).getAttribute('token'), null);
    assert.equal(await page.evaluate((t) => document.documentElement.outerHTML.includes(t), token), false);

    // (b) A ticket sets external-ref: the card opens again, on bruno.
    await page.locator(`${tid('host-ticket')}[data-ref="HD-2002"]`).click();
    await eventually('bruno in the card', async () => (await card.locator(tid('customer-name')).textContent()) === 'Bruno Keller');
    await eventually('the desk hears bruno', async () => (await page.locator(tid('host-card-customer')).textContent()) === 'Bruno Keller');

    // (c) An action in the card: the desk hears it as a DOM event.
    const tx = card.locator(`${tid('action-card')}[data-action="gettransactions"]`);
    await tx.locator(`${tid('action-field')}[data-field="account_id"]`).fill('acc-2001');
    await tx.locator(tid('action-run')).click();
    await tx.locator(tid('result-table')).first().waitFor();
    await eventually('the desk hears of the action', async () => (await page.locator(tid('host-card-action')).textContent()) === 'gettransactions: ok');
    await screenshot(page, 'card-element-in-desk');

    // (d) The token attribute: a refused one signs the card out, the right one brings it back.
    await page.locator(tid('host-card')).evaluate((el) => {
      el.token = null;
      el.setAttribute('token', 'dbg_not-a-token');
    });
    await eventually('the desk hears signed_out', async () => (await hostState(page)) === 'signed_out');
    await page.locator(tid('host-card')).evaluate((el, t) => el.setAttribute('token', t), token);
    await eventually('ready again', async () => (await hostState(page)) === 'ready');
    assert.equal(await card.locator(tid('customer-name')).textContent(), 'Bruno Keller');
    assertNoProblems(agent);
  });
});

/** The desk page's frame holds no card: refused, or blocked by the browser. */
async function assertNoCard(page) {
  await page.locator(tid('host-card-frame')).waitFor();
  await eventually('the frame settles', async () => {
    const frame = page.frames().find((f) => f !== page.mainFrame());
    return frame && (await frame.evaluate(() => document.readyState).catch(() => 'complete')) === 'complete';
  });
  const frame = page.frames().find((f) => f !== page.mainFrame());
  const notice = await frame.locator(tid('card-notice')).count().catch(() => 0);
  assert.equal(notice, 0, 'no card in the frame');
  assert.equal(await page.locator(tid('host-card-state')).getAttribute('data-state'), 'loading');
}
