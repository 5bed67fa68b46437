// Actions with inputs, writes and customers as callers, end to end, in
// Chromium against the real `deskbridge demo` (issue 17):
//   1. the demo site shows the signed-in customer their own recent
//      transactions through Deskbridge.run("gettransactions"), whose
//      refusals carry the gateway's problem (a bad input, a write that is
//      not for customers);
//   2. the agent sees every action of the connection, runs gettransactions
//      through its form (the browser's checks, then the gateway's 422 next
//      to the field) and sees the table;
//   3. the agent blocks a card after confirming exactly what is sent; the
//      answer to the first try is lost, the retry sends the same
//      Idempotency-Key, and the company is called once (the audit log says
//      `ok`, then `replayed`);
//   4. an admin reveals a masked IBAN with a reason, which the audit log
//      keeps; an agent (role `agent`) sees it masked with no Reveal button;
//   5. forms, tables and the confirmation fit a 360 px wide window.
// The tests share one demo and run in order.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startDemo } from '../lib/demo.js';
import { eventually, launch, newWatchedContext, screenshot, SCREENSHOTS } from '../lib/browser.js';

const tid = (id) => `[data-testid="${id}"]`;

let demo;
let browser;
let agent; // the admin's console
let customer; // alice on the demo site
let conversationId;
let profile; // getprofile's answer, through the agent API

async function csrfToken(context) {
  const res = await context.request.get(`${demo.gatewayUrl}/console/api/me`);
  assert.equal(res.status(), 200);
  return (await res.json()).csrf_token;
}

/** Runs an action through the agent API with the console's cookie. */
async function agentRun(action, input) {
  const res = await agent.context.request.post(`${demo.gatewayUrl}/v1/conversations/${conversationId}/actions/${action}`, {
    headers: { 'x-csrf-token': await csrfToken(agent.context) },
    data: { input },
  });
  assert.equal(res.status(), 200, `${action}: ${await res.text()}`);
  return res.json();
}

async function audit() {
  const res = await agent.context.request.get(`${demo.gatewayUrl}/v1/audit?conversation=${conversationId}&limit=100`);
  assert.equal(res.status(), 200);
  return (await res.json()).records;
}

function assertNoProblems(...watched) {
  assert.deepEqual(watched.flatMap((w) => w.problems), [], 'browser console errors or uncaught exceptions');
}

const actionCard = (name) => agent.page.locator(`${tid('action-card')}[data-action="${name}"]`);
const field = (card, name) => card.locator(`${tid('action-field')}[data-field="${name}"]`);
const fieldError = (card, name) => card.locator(`${tid('field-error')}[data-field="${name}"]`);

describe('actions: forms, tables, confirmed writes, customers as callers', { timeout: 300_000 }, () => {
  before(async () => {
    demo = await startDemo({ ttl: 600, logPath: join(SCREENSHOTS, 'demo-actions.log') });
    browser = await launch();
    agent = await newWatchedContext(browser, { viewport: { width: 1280, height: 900 } });
    agent.page = await agent.page();
    customer = await newWatchedContext(browser);
    customer.page = await customer.page();
  });

  after(async () => {
    await browser?.close();
    await demo?.stop();
  });

  test('1. the demo site shows the customer their own recent transactions through Deskbridge.run', async () => {
    const site = customer.page;
    await site.goto(`${demo.backendUrl}/`);
    await site.locator(`${tid('chat-open-anonymous')}:not([disabled])`).waitFor();
    assert.match(await site.locator(tid('chat-what')).textContent(), /link between your login on this site and what the agent sees/);
    const ran = site.waitForRequest((r) => /\/v1\/sessions\/ses_[^/]+\/actions\/gettransactions$/.test(r.url()) && r.method() === 'POST');
    await site.locator(tid('site-username')).fill('alice');
    await site.locator(tid('site-password')).fill(demo.password('alice'));
    await site.locator(tid('site-signin-submit')).click();
    await site.locator(`${tid('chat-auth')}[data-authenticated="true"]`).waitFor();
    conversationId = (await site.locator(tid('chat-conversation')).textContent()).trim();
    const request = await ran;
    assert.equal(request.headers()['x-deskbridge-app-key'], demo.config.app_key);
    const asked = JSON.parse(request.postData());
    await site.locator(tid('site-tx-row')).first().waitFor();

    // The same as the agent gets for the same input (descriptions and amounts
    // are not masked for either audience).
    const agentCtx = agent.context;
    await agent.page.goto(`${demo.gatewayUrl}/console`);
    await agent.page.locator(tid('signin-username')).fill(demo.agent.username);
    await agent.page.locator(tid('signin-password')).fill(demo.agent.password);
    await agent.page.locator(tid('signin-submit')).click();
    await agent.page.locator(tid('agent-name')).waitFor();
    assert.ok(agentCtx);
    const expected = (await agentRun('gettransactions', asked.input)).data.transactions;
    assert.ok(expected.length > 0, 'alice has transactions');
    const rows = await site.locator(tid('site-tx-row')).allTextContents();
    assert.equal(rows.length, expected.length);
    expected.forEach((t, i) => assert.ok(rows[i].includes(t.description), `row ${i}: ${rows[i]} shows ${t.description}`));

    // The gateway's audit log: the customer ran it, on their own conversation.
    const records = await audit();
    const mine = records.find((r) => r.action === 'gettransactions' && r.caller === 'customer');
    assert.ok(mine, `a customer's gettransactions in ${JSON.stringify(records)}`);
    assert.equal(mine.outcome, 'ok');
    await screenshot(site, 'demo-site-transactions');

    // Deskbridge.run's refusals carry the gateway's problem.
    customer.expect(/\/actions\/gettransactions$/, 422);
    customer.expect(/\/actions\/blockcard$/, 403);
    const refused = await site.evaluate(async () => {
      const attempt = (action, input) =>
        window.Deskbridge.run(action, input).then(
          () => null,
          (e) => ({ isError: e instanceof Error, problem: e.problem, status: e.status, errors: e.errors }),
        );
      return {
        input: await attempt('gettransactions', { account_id: 'nope', limit: 0 }),
        write: await attempt('blockcard', { card_id: 'card-1101', reason: 'lost' }),
      };
    });
    assert.equal(refused.input.isError, true);
    assert.equal(refused.input.problem, 'invalid_action_input');
    assert.equal(refused.input.status, 422);
    assert.deepEqual(refused.input.errors.map((e) => e.field).sort(), ['account_id', 'limit']);
    assert.equal(refused.write.problem, 'forbidden', 'blockcard is not for customers');
    assert.equal(refused.write.status, 403);
    assertNoProblems(agent, customer);
  });

  test('2. the agent runs gettransactions through its form and sees the table', async () => {
    const page = agent.page;
    const profileRes = await agentRun('getprofile', {});
    profile = profileRes.data;
    await page.goto(`${demo.gatewayUrl}/console#/c/${conversationId}`);
    await page.locator(`${tid('customer-card')}[data-state="ready"]`).waitFor();
    assert.equal((await page.locator(tid('customer-name')).textContent()).trim(), profile.name);

    // Every action of the connection, the profile action heading the conversation.
    const list = await (await agent.context.request.get(`${demo.gatewayUrl}/v1/connections/${demo.config.connection}/actions`)).json();
    const others = list.actions.map((a) => a.name).filter((n) => n !== list.profile_action);
    await actionCard(others[0]).waitFor();
    assert.deepEqual(await page.locator(tid('action-card')).evaluateAll((els) => els.map((e) => e.dataset.action)), others);

    const card = actionCard('gettransactions');
    assert.equal(await card.getAttribute('data-kind'), 'read');
    // Built from the input schema: a required text field, a number with its bounds.
    assert.equal(await field(card, 'account_id').getAttribute('aria-required'), 'true');
    assert.equal(await field(card, 'limit').getAttribute('type'), 'number');
    assert.equal(await field(card, 'limit').getAttribute('min'), '1');
    assert.equal(await field(card, 'limit').getAttribute('max'), '100');
    assert.equal(await field(card, 'limit').inputValue(), '20', 'the default');

    // The browser's own checks first: nothing is sent.
    let sent = 0;
    const count = (r) => {
      if (r.url().endsWith('/actions/gettransactions')) sent += 1;
    };
    page.on('request', count);
    await card.locator(tid('action-run')).click();
    await fieldError(card, 'account_id').filter({ hasText: 'Required' }).waitFor();
    await field(card, 'account_id').fill('acc-12');
    await field(card, 'limit').fill('500');
    await card.locator(tid('action-run')).click();
    await fieldError(card, 'account_id').filter({ hasText: 'expected format' }).waitFor();
    await fieldError(card, 'limit').filter({ hasText: 'at most 100' }).waitFor();
    assert.equal(sent, 0, 'a bad input is not sent');
    await card.evaluate((el) => el.scrollIntoView({ block: 'start' }));
    await screenshot(page, 'console-form');

    // The gateway's 422, next to its field: the request is changed on its
    // way (as an older console, or a console of another make, would send it).
    const account = profile.accounts[0].id;
    await field(card, 'account_id').fill(account);
    await field(card, 'limit').fill('20');
    await page.route('**/actions/gettransactions', (route) => route.continue({ postData: JSON.stringify({ input: { account_id: account, limit: 1000 } }) }), { times: 1 });
    agent.expect(/\/actions\/gettransactions$/, 422);
    await card.locator(tid('action-run')).click();
    await fieldError(card, 'limit').waitFor();
    assert.match(await fieldError(card, 'limit').textContent(), /1000|100|most|maximum/i);
    assert.equal(await card.locator(tid('result-table')).count(), 0);

    await field(card, 'limit').fill('8');
    await card.locator(tid('action-run')).click();
    const table = card.locator(tid('result-table'));
    await table.waitFor();
    page.off('request', count);
    const expected = (await agentRun('gettransactions', { account_id: account, limit: 8 })).data.transactions;
    assert.equal(await table.locator(tid('result-row')).count(), expected.length);
    const firstRow = await table.locator(tid('result-row')).first().textContent();
    assert.ok(firstRow.includes(expected[0].description), `${firstRow} shows ${expected[0].description}`);
    // Money reads as money, the column headings as words.
    const headings = (await table.locator('th').allTextContents()).map((t) => t.trim().toLowerCase());
    assert.ok(headings.includes('description') && headings.includes('amount'), headings.join(', '));
    assert.match(await table.locator('td[data-column="amount"]').first().textContent(), /[$€£]|USD|EUR|SGD/);
    // A masked value says so (counterparty IBANs are last4 for agents).
    const masked = card.locator(tid('masked-value'));
    if ((await masked.count()) > 0) assert.match(await masked.first().textContent(), /••••/);
    await card.evaluate((el) => el.scrollIntoView({ block: 'start' }));
    await screenshot(page, 'console-table');
    assertNoProblems(agent, customer);
  });

  test('3. the agent blocks a card after confirming; the retry with the same key does not call the company twice', async () => {
    const page = agent.page;
    const cardToBlock = profile.cards.find((c) => c.status === 'active');
    assert.ok(cardToBlock, `an active card in ${JSON.stringify(profile.cards)}`);
    const card = actionCard('blockcard');
    assert.equal(await card.getAttribute('data-kind'), 'write');
    await card.locator(tid('write-open')).click();
    await field(card, 'card_id').fill(cardToBlock.id);
    await field(card, 'reason').selectOption('lost');
    await card.locator(tid('write-review')).click();

    // The confirmation shows exactly what will be sent.
    const dialog = page.locator(tid('confirm-dialog'));
    await dialog.waitFor();
    const payload = JSON.parse(await dialog.locator(tid('confirm-payload')).textContent());
    assert.deepEqual(payload, { input: { card_id: cardToBlock.id, reason: 'lost' } });
    const shownKey = (await dialog.locator(tid('confirm-key')).textContent()).replace('Idempotency-Key:', '').trim();
    assert.match(shownKey, /^[0-9a-f-]{36}$/);
    await screenshot(page, 'console-confirm');

    // The first try reaches the company, but its answer is lost on the way back.
    const keys = [];
    const bodies = [];
    page.on('request', (r) => {
      if (r.url().endsWith('/actions/blockcard')) {
        keys.push(r.headers()['idempotency-key']);
        bodies.push(r.postData());
      }
    });
    let reached = null;
    await page.route(
      '**/actions/blockcard',
      async (route) => {
        reached = await route.fetch();
        await route.abort('connectionreset');
      },
      { times: 1 },
    );
    agent.expect(/\/actions\/blockcard$/, 'net::ERR_CONNECTION_RESET');
    await dialog.locator(tid('confirm-submit')).click();
    await dialog.locator(tid('action-error')).waitFor();
    assert.equal(reached.status(), 200, 'the company blocked the card on the first try');
    assert.equal(await dialog.locator(tid('confirm-submit')).textContent(), 'Try again');

    // The agent clicks again: the same key, the first outcome given again.
    await dialog.locator(tid('confirm-submit')).click();
    await card.locator(tid('action-replayed')).waitFor();
    assert.equal(await dialog.isVisible(), false, 'the confirmation closes');
    assert.deepEqual(keys, [shownKey, shownKey], 'one key per confirmation, sent again on the retry');
    assert.equal(bodies[0], bodies[1]);
    const answer = card.locator(tid('answer'));
    assert.match(await answer.textContent(), /blocked/i);

    // The gateway's audit: the company was called once; the second is a replay.
    const runs = (await audit()).filter((r) => r.action === 'blockcard' && r.caller === 'agent');
    assert.deepEqual(runs.map((r) => r.outcome), ['replayed', 'ok'], 'newest first');
    // And the customer card, reloaded, shows the card blocked.
    const now = (await agentRun('getprofile', {})).data.cards.find((c) => c.id === cardToBlock.id);
    assert.equal(now.status, 'blocked');
    await page.locator(`${tid('customer-card')}[data-state="ready"]`).waitFor();

    // A new confirmation is a new key: a double click on it still sends once.
    keys.length = 0;
    await card.locator(tid('write-open')).click();
    await field(card, 'reason').selectOption('stolen');
    await card.locator(tid('write-review')).click();
    await dialog.waitFor();
    const second = (await dialog.locator(tid('confirm-key')).textContent()).replace('Idempotency-Key:', '').trim();
    assert.notEqual(second, shownKey);
    await dialog.locator(tid('confirm-submit')).dblclick();
    await eventually('the second confirmation is answered', async () => !(await dialog.isVisible()) || (await dialog.locator(tid('action-error')).count()) > 0);
    assert.deepEqual(keys, [second], 'a double click sends once');
    assertNoProblems(agent, customer);
  });

  test('4. an admin reveals a masked IBAN with a reason, kept in the audit log; an agent may not', async () => {
    const page = agent.page;
    const card = actionCard('gettransactions');
    const masked = card.locator(tid('masked-value')).first();
    await masked.waitFor();
    const pointer = await masked.getAttribute('data-pointer');
    assert.match(pointer, /^\/transactions\/\d+\/counterparty_iban$/);
    const shown = (await masked.locator('.masked-text').textContent()).trim();
    assert.match(shown, /^••••.{4}$/);

    await masked.locator(tid('reveal-button')).click();
    const dialog = page.locator(tid('reveal-dialog'));
    await dialog.locator(tid('reveal-reason')).waitFor();
    await dialog.locator(tid('reveal-submit')).click();
    await dialog.locator(tid('reveal-error')).filter({ hasText: 'reason' }).waitFor();
    const reason = 'the customer asked to confirm the IBAN of a transfer';
    await dialog.locator(tid('reveal-reason')).fill(reason);
    await dialog.locator(tid('reveal-submit')).click();
    const revealed = card.locator(`${tid('revealed-value')}[data-pointer="${pointer}"]`);
    await revealed.waitFor();
    const text = await revealed.textContent();
    assert.doesNotMatch(text, /••••/);
    assert.ok(text.includes(shown.slice(4)), `${text} ends like ${shown}`);
    assert.match(text, /audited/);

    const record = (await audit()).find((r) => r.revealed === pointer);
    assert.ok(record, 'the reveal is audited');
    assert.equal(record.reason, reason);
    assert.equal(record.action, 'gettransactions');
    assert.equal(record.agent, demo.agent.username);
    await page.goto(`${demo.gatewayUrl}/console#/admin?conversation=${encodeURIComponent(conversationId)}`);
    const shownReveal = page.locator(tid('audit-reveal')).first();
    await shownReveal.waitFor();
    assert.ok((await shownReveal.textContent()).includes(reason));
    assert.equal(await page.locator(`${tid('audit-row')}[data-outcome="replayed"]`).count(), 1);
    await screenshot(page, 'console-audit-actions');

    // An agent with the role `agent` sees the value masked, with no Reveal button.
    const viewer = await newWatchedContext(browser);
    try {
      const password = `plain-${Math.random().toString(36).slice(2)}-pw`;
      demo.addAgent('plain-agent', 'agent', password);
      const p = await viewer.page();
      await p.goto(`${demo.gatewayUrl}/console`);
      await p.locator(tid('signin-username')).fill('plain-agent');
      await p.locator(tid('signin-password')).fill(password);
      await p.locator(tid('signin-submit')).click();
      await p.locator(tid('agent-name')).waitFor();
      await p.goto(`${demo.gatewayUrl}/console#/c/${conversationId}`);
      const tx = p.locator(`${tid('action-card')}[data-action="gettransactions"]`);
      await tx.locator(`${tid('action-field')}[data-field="account_id"]`).fill(profile.accounts[0].id);
      await tx.locator(tid('action-run')).click();
      await tx.locator(tid('result-table')).waitFor();
      assert.ok((await tx.locator(tid('masked-value')).count()) > 0);
      assert.equal(await tx.locator(tid('reveal-button')).count(), 0, 'no Reveal button for the role agent');
      assertNoProblems(viewer);
    } finally {
      await viewer.context.close();
    }
    assertNoProblems(agent, customer);
  });

  test('5. forms, tables and the confirmation fit a 360 px wide window', async () => {
    const narrow = await newWatchedContext(browser, { viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    try {
      const page = await narrow.page();
      await page.goto(`${demo.gatewayUrl}/console`);
      await page.locator(tid('signin-username')).fill(demo.agent.username);
      await page.locator(tid('signin-password')).fill(demo.agent.password);
      await page.locator(tid('signin-submit')).click();
      await page.locator(tid('agent-name')).waitFor();
      await page.goto(`${demo.gatewayUrl}/console#/c/${conversationId}`);
      await page.locator(`${tid('customer-card')}[data-state="ready"]`).waitFor();
      const tx = page.locator(`${tid('action-card')}[data-action="gettransactions"]`);
      await tx.locator(`${tid('action-field')}[data-field="account_id"]`).fill(profile.accounts[0].id);
      await tx.locator(tid('action-run')).click();
      await tx.locator(tid('result-table')).waitFor();
      const width = () => page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok((await width()) <= 360, `the conversation with an answer: ${await width()} px wide`);
      await tx.evaluate((el) => el.scrollIntoView({ block: 'start' }));
      await screenshot(page, 'console-narrow-actions');

      const writes = (await audit()).filter((r) => r.action === 'blockcard').length;
      const block = page.locator(`${tid('action-card')}[data-action="blockcard"]`);
      await block.locator(tid('write-open')).click();
      await block.locator(`${tid('action-field')}[data-field="card_id"]`).fill(profile.cards[profile.cards.length - 1].id);
      await block.locator(`${tid('action-field')}[data-field="reason"]`).selectOption('damaged');
      await block.locator(tid('write-review')).click();
      const dialog = page.locator(tid('confirm-dialog'));
      await dialog.waitFor();
      const box = await dialog.boundingBox();
      assert.ok(box.x >= 0 && box.x + box.width <= 360, `the confirmation spans ${box.x}..${box.x + box.width}`);
      await screenshot(page, 'console-narrow-confirm');
      await dialog.locator(tid('confirm-cancel')).click();
      assert.equal(await dialog.isVisible(), false, 'cancelled');
      assert.equal((await audit()).filter((r) => r.action === 'blockcard').length, writes, 'a cancelled confirmation sends nothing');
      assertNoProblems(narrow);
    } finally {
      await narrow.context.close();
    }
  });
});
