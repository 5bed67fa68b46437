// Agents sign in to the console at the company's identity provider (issue
// 19), in Chromium: the console's "Sign in with …" button, oidc-provider's
// own login and consent pages, back to a signed-in console with the role
// the agent's groups map to; signing out ends the provider's session too
// (RP-initiated logout); a user whose groups map to no role gets a page that
// says so. Local passwords are turned off on this gateway.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { startIdpGateway } from '../lib/agent-idp.js';
import { launch, newWatchedContext, screenshot } from '../lib/browser.js';

let gateway;
let browser;

/** The provider's own pages load a web font (offline here) and ask for a favicon it has not. */
function allowProviderPageNoise(w) {
  w.expect(/fonts\.googleapis\.com/, 'net::ERR_NAME_NOT_RESOLVED');
  w.expect(/\/favicon\.ico$/, 404);
}

/** At the provider: its login page, then its consent page, as `login`. */
async function signInAtProvider(page, login) {
  await page.waitForURL(`${gateway.idp.issuer}/**`);
  await page.locator('input[name=login]').fill(login);
  // The development login takes any password.
  await page.locator('input[name=password]').fill('any password at all');
  await page.locator('button[type=submit]').click();
  // Consent: the console asks for openid, profile and email.
  await page.getByRole('button', { name: 'Continue' }).click();
}

describe('console sign-in at the identity provider', { timeout: 120_000 }, () => {
  before(async () => {
    gateway = await startIdpGateway();
    browser = await launch();
  });

  after(async () => {
    await browser?.close();
    await gateway?.stop();
  });

  test('an agent signs in with the provider, gets the mapped role, and signs out there too', async () => {
    const w = await newWatchedContext(browser);
    allowProviderPageNoise(w);
    // Asked on purpose once signed out.
    w.expect(/\/console\/api\/me/, 401);
    const page = await w.page();
    await page.goto(`${gateway.url}/console/`);
    const button = page.getByTestId('signin-provider');
    await button.waitFor();
    assert.equal((await button.textContent()).trim(), 'Sign in with Acme SSO');
    // Passwords are off here: no password field is offered.
    assert.equal(await page.getByTestId('signin-username').isVisible(), false);
    await screenshot(page, 'console-oidc-sign-in');

    await button.click();
    await signInAtProvider(page, 'ana');
    // Back at the console, signed in, the role from the `groups` claim.
    await page.getByTestId('agent-name').filter({ hasText: 'ana' }).waitFor();
    assert.equal(await page.getByTestId('agent-role').textContent(), 'supervisor');
    assert.equal(new URL(page.url()).search, '', 'the sign-in marker is gone from the address');
    await screenshot(page, 'console-oidc-signed-in');
    // The session works on the agent API from the page.
    const status = await page.evaluate(async () => (await fetch('/v1/conversations')).status);
    assert.equal(status, 200);

    // Signing out goes on to the provider, which asks, then comes back.
    await page.getByTestId('signout').click();
    await page.waitForURL(`${gateway.idp.issuer}/**`);
    await page.getByRole('button', { name: /yes, sign me out/i }).click();
    await page.waitForURL(`${gateway.url}/console/**`);
    await page.getByTestId('signin-provider').waitFor();
    const after = await page.evaluate(async () => (await fetch('/console/api/me')).status);
    assert.equal(after, 401, 'the console session has ended');
    // The provider's session has ended too: it asks for the login again.
    await page.getByTestId('signin-provider').click();
    await page.waitForURL(`${gateway.idp.issuer}/**`);
    await page.locator('input[name=login]').waitFor();
    await closeChecked(w);
  });

  test('signing out at the provider, elsewhere, ends the console session (back-channel logout)', async () => {
    const w = await newWatchedContext(browser);
    allowProviderPageNoise(w);
    // The console's own calls once its session has ended.
    w.expect(/\/console\/api\/me/, 401);
    w.expect(/\/v1\//, 401);
    const page = await w.page();
    await page.goto(`${gateway.url}/console/`);
    await page.getByTestId('signin-provider').click();
    await signInAtProvider(page, 'ana');
    await page.getByTestId('agent-name').filter({ hasText: 'ana' }).waitFor();

    // Another tab signs out at the provider itself, not through the console.
    const elsewhere = await w.page();
    await elsewhere.goto(`${gateway.idp.issuer}/session/end`);
    await elsewhere.getByRole('button', { name: /yes, sign me out/i }).click();
    await elsewhere.waitForLoadState();
    // The provider told the gateway: the console's session is over.
    let status = 200;
    for (let i = 0; i < 50 && status === 200; i += 1) {
      status = await page.evaluate(async () => (await fetch('/console/api/me')).status);
      if (status === 200) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 401, `the console session ended with the provider session; gateway log:\n${gateway.log()}`);
    await closeChecked(w);
  });

  test('a user whose groups map to no role is refused with a page that says why', async () => {
    const w = await newWatchedContext(browser);
    allowProviderPageNoise(w);
    // The refusal is a 403 page, which Chromium reports.
    w.expect(/\/console\/oidc\/callback/, 403);
    w.expect(/\/console\/api\/me/, 401);
    const page = await w.page();
    await page.goto(`${gateway.url}/console/`);
    await page.getByTestId('signin-provider').click();
    await signInAtProvider(page, 'zed');
    const outcome = page.getByTestId('sign-in-outcome');
    await outcome.waitFor();
    const text = await outcome.textContent();
    assert.match(text, /You have no role in deskbridge/);
    assert.match(text, /role_map/);
    await screenshot(page, 'console-oidc-no-role');
    const me = await page.evaluate(async () => (await fetch('/console/api/me')).status);
    assert.equal(me, 401, 'no console session');
    // Sign out at the provider, and in again as someone with a role.
    await page.getByTestId('sign-in-switch').click();
    await page.waitForURL(`${gateway.idp.issuer}/**`);
    await page.getByRole('button', { name: /yes, sign me out/i }).click();
    await page.waitForURL(`${gateway.url}/console/**`);
    await page.getByTestId('signin-provider').click();
    await signInAtProvider(page, 'ana');
    await page.getByTestId('agent-name').filter({ hasText: 'ana' }).waitFor();
    await closeChecked(w);
  });
});

async function closeChecked(w) {
  assert.deepEqual(w.problems, [], 'the pages reported no error');
  await w.context.close();
}
