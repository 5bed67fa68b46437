// The gateway against a vendor-style token endpoint (the vendor's published
// example, not RFC 6749): grant_type only in the query string, client
// credentials only in the form body, `expires_in` a string, `scope`
// "client_credentials". The endpoint refuses anything else, so a token in
// hand proves the gateway sent exactly that shape.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { startGateway } from '../lib/gateway.js';
import { startVendor } from '../lib/vendor.js';

const REFRESH_DEADLINE_MS = 15_000;
const POLL_MS = 100;

const secret = () => randomBytes(24).toString('base64url');
// expires_in as the vendor writes it: "28799"; and a short one, to watch the
// gateway renew on the lifetime it read from the string.
const clients = {
  'vendor-main': { secret: secret(), expiresIn: 28799 },
  'vendor-short': { secret: secret(), expiresIn: 3 },
  'vendor-burst': { secret: secret(), expiresIn: 28799 },
  'vendor-rotated': { secret: secret(), expiresIn: 28799 },
};
let vendor;
let gateway;

const step = (probe, name) => probe.steps.find((s) => s.step === name);
const requestsOf = (clientId) => vendor.tokenRequests.filter((r) => r.clientId === clientId);

before(async () => {
  vendor = await startVendor(clients);
  const connection = (name, clientId, extra = {}) => ({
    name,
    baseUrl: vendor.url,
    tokenUrl: vendor.tokenUrl,
    clientId,
    secret: clients[clientId].secret,
    authMethod: 'client_secret_post',
    grantTypeIn: 'query',
    ...extra,
  });
  gateway = await startGateway([
    connection('vendor', 'vendor-main'),
    connection('vendor-short', 'vendor-short'),
    connection('vendor-burst', 'vendor-burst'),
    connection('vendor-rotated', 'vendor-rotated'),
    connection('vendor-wrong', 'vendor-main', { secret: `${clients['vendor-main'].secret}x` }),
    // Negative control: the RFC 6749 shape, which this endpoint refuses.
    connection('vendor-rfc-shape', 'vendor-main', { grantTypeIn: 'body' }),
  ]);
});

after(async () => {
  const code = await gateway?.stop();
  await vendor?.close();
  if (code !== undefined && code !== 0) throw new Error(`the gateway exited with ${code} on SIGTERM; log:\n${gateway.log()}`);
  gateway?.cleanup();
});

describe('vendor-style token endpoint', () => {
  test('grant_type in the query, credentials in the body: the probe gets a token', async () => {
    const probe = await gateway.probe('vendor');
    assert.equal(probe.ok, true, JSON.stringify({ probe, requests: vendor.tokenRequests }));
    const [seen, ...more] = requestsOf('vendor-main');
    assert.equal(more.length, 0, JSON.stringify(vendor.tokenRequests));
    assert.equal(seen.status, 200, seen.refused);
    assert.deepEqual(seen.query, { grant_type: 'client_credentials' });
    assert.deepEqual(seen.formKeys.sort(), ['client_id', 'client_secret']);
    assert.equal(seen.authorization, false);
    assert.deepEqual(await gateway.tokenFetches('vendor'), { ok: 1, error: 0 });
  });

  test('the token (expires_in "28799", scope "client_credentials") is used on the vendor API and cached', async () => {
    const conversation = await gateway.openConversation('vendor');
    for (let i = 0; i < 3; i += 1) {
      const { status, json } = await gateway.runAction(conversation, 'ping');
      assert.equal(status, 200, JSON.stringify(json));
      assert.equal(json.data.client_id, 'vendor-main');
    }
    // One token for the first probe and three calls: the calls use the cache.
    assert.equal(vendor.issued('vendor-main'), 1);
    assert.deepEqual(await gateway.tokenFetches('vendor'), { ok: 1, error: 0 });
    // A probe always asks the token endpoint, so it sees a rotated secret at once.
    assert.equal((await gateway.probe('vendor')).ok, true);
    assert.equal(vendor.issued('vendor-main'), 2);
  });

  test('when the vendor forgets its tokens, the API 401 makes the gateway fetch a new one (grant_type still in the query)', async () => {
    const conversation = await gateway.openConversation('vendor');
    const issuedBefore = vendor.issued('vendor-main');
    vendor.revokeAll();
    const callsBefore = vendor.apiCalls.length;
    const { status, json } = await gateway.runAction(conversation, 'ping');
    assert.equal(status, 200, JSON.stringify(json));
    assert.deepEqual(vendor.apiCalls.slice(callsBefore).map((c) => c.ok), [false, true]);
    assert.equal(vendor.issued('vendor-main'), issuedBefore + 1);
    assert.deepEqual(requestsOf('vendor-main').at(-1).query, { grant_type: 'client_credentials' });
  });

  test('a string expires_in is honoured: a "3" second token is renewed ahead of its expiry', async () => {
    const conversation = await gateway.openConversation('vendor-short');
    const first = await gateway.runAction(conversation, 'ping');
    assert.equal(first.status, 200, JSON.stringify(first.json));
    assert.equal(vendor.issued('vendor-short'), 1);
    const started = Date.now();
    // Had the gateway ignored the string, it would assume its 300 s default
    // and not ask again for minutes. Polling, not sleeping: stop as soon as it renews.
    while (vendor.issued('vendor-short') < 2) {
      assert.ok(
        Date.now() - started < REFRESH_DEADLINE_MS,
        `no renewal within ${REFRESH_DEADLINE_MS} ms of a token that expires in 3 s: ${JSON.stringify(requestsOf('vendor-short'))}`,
      );
      await new Promise((r) => setTimeout(r, POLL_MS));
      const call = await gateway.runAction(conversation, 'ping');
      assert.equal(call.status, 200, JSON.stringify(call.json));
    }
    const elapsed = Date.now() - started;
    // Renewed at about 80% of 3 s (less jitter), not at once: the lifetime was read, not taken as 0.
    assert.ok(elapsed >= 1500, `renewed after only ${elapsed} ms`);
    for (const r of requestsOf('vendor-short')) {
      assert.deepEqual(r.query, { grant_type: 'client_credentials' });
      assert.equal(r.status, 200);
    }
  });

  test('twenty concurrent calls on a cold connection make one token request', async () => {
    const conversation = await gateway.openConversation('vendor-burst');
    const results = await Promise.all(Array.from({ length: 20 }, () => gateway.runAction(conversation, 'ping')));
    for (const { status, json } of results) assert.equal(status, 200, JSON.stringify(json));
    assert.equal(requestsOf('vendor-burst').length, 1, JSON.stringify(requestsOf('vendor-burst')));
    assert.deepEqual(await gateway.tokenFetches('vendor-burst'), { ok: 1, error: 0 });
  });

  test('a wrong secret fails the probe with invalid_client and counts an error', async () => {
    const before = vendor.tokenRequests.length;
    const probe = await gateway.probe('vendor-wrong');
    assert.equal(probe.ok, false, JSON.stringify(probe));
    const token = step(probe, 'system_token');
    assert.equal(token.ok, false);
    assert.match(token.detail, /401/);
    assert.match(token.detail, /invalid_client/);
    const seen = vendor.tokenRequests.slice(before);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].status, 401);
    assert.deepEqual(seen[0].query, { grant_type: 'client_credentials' });
    assert.deepEqual(await gateway.tokenFetches('vendor-wrong'), { ok: 0, error: 1 });

    // Backed off, not hammered: more probes at once reuse the failure.
    const again = await Promise.all(Array.from({ length: 10 }, () => gateway.probe('vendor-wrong')));
    for (const p of again) assert.match(step(p, 'system_token').detail, /invalid_client/);
    assert.ok(vendor.tokenRequests.length - before <= 2, `${vendor.tokenRequests.length - before} token requests for 11 probes`);
  });

  test(
    'the probe checks the token endpoint even while a token is cached (a rotated client secret shows up)',
    async () => {
      assert.equal((await gateway.probe('vendor-rotated')).ok, true);
      // The vendor rotates the client secret; the token already issued stays valid, as it would.
      clients['vendor-rotated'].secret = secret();
      const before = vendor.tokenRequests.length;
      const probe = await gateway.probe('vendor-rotated');
      assert.equal(vendor.tokenRequests.length - before, 1, `the probe made no token request: ${JSON.stringify(probe)}`);
      assert.equal(step(probe, 'system_token').ok, false, JSON.stringify(probe));
    },
  );

  test('negative control: grant_type in the body is refused by this endpoint, and the gateway says so', async () => {
    const before = vendor.tokenRequests.length;
    const probe = await gateway.probe('vendor-rfc-shape');
    assert.equal(probe.ok, false, JSON.stringify(probe));
    assert.match(step(probe, 'system_token').detail, /400: invalid_request/);
    const seen = vendor.tokenRequests.slice(before);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0].query, {});
    assert.ok(seen[0].formKeys.includes('grant_type'));
    assert.match(seen[0].refused, /query string/);
    assert.deepEqual(await gateway.tokenFetches('vendor-rfc-shape'), { ok: 0, error: 1 });
  });
});
