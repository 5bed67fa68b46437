// The gateway's client-credentials client against panva's oidc-provider, an
// OpenID-certified authorization server none of us wrote: client_secret_basic
// and client_secret_post, RFC 8707 resource indicators, JWT and opaque access
// tokens, and the token then accepted by a resource server that checks it
// with the provider (JWKS or introspection).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startGateway } from '../lib/gateway.js';
import { JWT_RESOURCE, OPAQUE_RESOURCE, SCOPE, makeClients, startProvider, startResourceServer } from '../lib/provider.js';

const clients = makeClients();
let provider;
let rs;
let gateway;

function step(probe, name) {
  const found = probe.steps.find((s) => s.step === name);
  assert.ok(found, `probe has no ${name} step: ${JSON.stringify(probe)}`);
  return found;
}

/** The token requests the provider saw from one client. */
const requestsOf = (clientId) => provider.requests.filter((r) => r.clientId === clientId);

before(async () => {
  provider = await startProvider(clients);
  rs = await startResourceServer({ issuer: provider.issuer, introspector: clients.introspector });
  const connection = (name, client, authMethod, resource, extra = {}) => ({
    name,
    baseUrl: `${rs.url}/${resource === JWT_RESOURCE ? 'jwt' : 'opaque'}`,
    tokenUrl: provider.tokenUrl,
    clientId: client.client_id,
    secret: client.client_secret,
    authMethod,
    scope: SCOPE,
    resource,
    ...extra,
  });
  gateway = await startGateway([
    connection('oidc-basic', clients.basic, 'client_secret_basic', JWT_RESOURCE),
    connection('oidc-post', clients.post, 'client_secret_post', OPAQUE_RESOURCE),
    connection('oidc-awkward', clients.awkward, 'client_secret_basic', JWT_RESOURCE),
    connection('oidc-basic-wrong', clients.basic, 'client_secret_basic', JWT_RESOURCE, { secret: `${clients.basic.client_secret}x` }),
    connection('oidc-post-wrong', clients.post, 'client_secret_post', OPAQUE_RESOURCE, { secret: `${clients.post.client_secret}x` }),
    connection('oidc-signed', clients.signed, 'private_key_jwt', JWT_RESOURCE, {
      secret: undefined,
      privatePem: clients.signed._privatePem,
      keyId: clients.signed._keyId,
    }),
  ]);
});

after(async () => {
  const code = await gateway?.stop();
  await rs?.close();
  await provider?.close();
  if (code !== undefined && code !== 0) throw new Error(`the gateway exited with ${code} on SIGTERM; log:\n${gateway.log()}`);
  gateway?.cleanup();
});

describe('oidc-provider token endpoint', () => {
  test('private_key_jwt: the probe fetches a token with a signed client assertion, no secret anywhere', async () => {
    const probe = await gateway.probe('oidc-signed');
    assert.equal(probe.ok, true, JSON.stringify(probe));
    const seen = requestsOf(clients.signed.client_id);
    assert.equal(seen.length, 1, JSON.stringify(provider.requests));
    assert.equal(seen[0].status, 200);
    assert.equal(seen[0].authScheme, null);
    assert.deepEqual(seen[0].params.sort(), ['client_assertion', 'client_assertion_type', 'client_id', 'grant_type', 'resource', 'scope']);
    assert.deepEqual(await gateway.tokenFetches('oidc-signed'), { ok: 1, error: 0 });
  });

  test('private_key_jwt: the token works at the resource server, and each request carries a new assertion', async () => {
    const conversation = await gateway.openConversation('oidc-signed');
    const { status, json } = await gateway.runAction(conversation, 'ping');
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.data.client_id, clients.signed.client_id);
    // A second fetch (the probe bypasses the cache) signs anew: the
    // provider refuses a jti it has seen, so a reused assertion would fail here.
    const again = await gateway.probe('oidc-signed');
    assert.equal(again.ok, true, JSON.stringify(again));
    assert.equal(provider.issued(clients.signed.client_id), 2);
  });

  test('client_secret_basic: the probe fetches a token, sent with HTTP Basic only', async () => {
    const probe = await gateway.probe('oidc-basic');
    assert.equal(probe.ok, true, JSON.stringify(probe));
    assert.equal(step(probe, 'system_token').ok, true);
    assert.equal(step(probe, 'base_url').detail, 'HTTP 200');

    const seen = requestsOf(clients.basic.client_id);
    assert.equal(seen.length, 1, JSON.stringify(provider.requests));
    assert.equal(seen[0].status, 200);
    assert.equal(seen[0].authScheme, 'Basic');
    assert.deepEqual(seen[0].query, {});
    assert.deepEqual(seen[0].params.sort(), ['grant_type', 'resource', 'scope']);
    assert.deepEqual(await gateway.tokenFetches('oidc-basic'), { ok: 1, error: 0 });
  });

  test('client_secret_basic: the JWT access token is accepted by a resource server verifying it with the JWKS', async () => {
    const conversation = await gateway.openConversation('oidc-basic');
    const { status, json } = await gateway.runAction(conversation, 'ping');
    assert.equal(status, 200, JSON.stringify(json));
    assert.deepEqual(
      { verified_by: json.data.verified_by, client_id: json.data.client_id, scope: json.data.scope, aud: json.data.aud },
      { verified_by: 'jwks', client_id: clients.basic.client_id, scope: SCOPE, aud: JWT_RESOURCE },
    );
    assert.match(rs.seen.at(-1).customerAuth, /^JWT customer-/);
    // The probe's token was cached and reused: still one fetch.
    assert.equal(provider.issued(clients.basic.client_id), 1);
    assert.deepEqual(await gateway.tokenFetches('oidc-basic'), { ok: 1, error: 0 });
  });

  test('client_secret_post: the probe fetches a token, credentials in the form body and no Authorization header', async () => {
    const probe = await gateway.probe('oidc-post');
    assert.equal(probe.ok, true, JSON.stringify(probe));
    const seen = requestsOf(clients.post.client_id);
    assert.equal(seen.length, 1, JSON.stringify(provider.requests));
    assert.equal(seen[0].status, 200);
    assert.equal(seen[0].authScheme, null);
    assert.deepEqual(seen[0].query, {});
    assert.deepEqual(seen[0].params.sort(), ['client_id', 'client_secret', 'grant_type', 'resource', 'scope']);
    assert.deepEqual(await gateway.tokenFetches('oidc-post'), { ok: 1, error: 0 });
  });

  test('client_secret_post: the opaque access token is accepted by a resource server introspecting it', async () => {
    const conversation = await gateway.openConversation('oidc-post');
    const { status, json } = await gateway.runAction(conversation, 'ping');
    assert.equal(status, 200, JSON.stringify(json));
    assert.deepEqual(
      { verified_by: json.data.verified_by, client_id: json.data.client_id, scope: json.data.scope, aud: json.data.aud },
      { verified_by: 'introspection', client_id: clients.post.client_id, scope: SCOPE, aud: OPAQUE_RESOURCE },
    );
    assert.equal(provider.issued(clients.post.client_id), 1);
  });

  test('a token revoked at the provider (RFC 7009) is refused by the resource server; the gateway fetches a new one and retries once', async () => {
    const conversation = await gateway.openConversation('oidc-post');
    const first = await gateway.runAction(conversation, 'ping');
    assert.equal(first.status, 200, JSON.stringify(first.json));
    const held = rs.seen.at(-1).token;
    const issuedBefore = provider.issued(clients.post.client_id);
    await provider.revoke(clients.post, held);

    const seenBefore = rs.seen.length;
    const { status, json } = await gateway.runAction(conversation, 'ping');
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.data.verified_by, 'introspection');
    const calls = rs.seen.slice(seenBefore);
    assert.equal(calls.length, 2, JSON.stringify(calls));
    assert.equal(calls[0].token, held);
    assert.match(calls[0].rejected, /not active/);
    assert.notEqual(calls[1].token, held);
    assert.equal(calls[1].rejected, undefined);
    assert.equal(provider.issued(clients.post.client_id), issuedBefore + 1);
    assert.deepEqual(await gateway.tokenFetches('oidc-post'), { ok: issuedBefore + 1, error: 0 });
  });

  test('client_secret_basic with an id and secret full of reserved characters (RFC 6749 §2.3.1 form-urlencoding)', async () => {
    const probe = await gateway.probe('oidc-awkward');
    assert.equal(step(probe, 'system_token').ok, true, JSON.stringify(probe));
    const conversation = await gateway.openConversation('oidc-awkward');
    const { status, json } = await gateway.runAction(conversation, 'ping');
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.data.client_id, clients.awkward.client_id);
  });

  for (const [name, client, scheme] of [
    ['oidc-basic-wrong', clients.basic, 'Basic'],
    ['oidc-post-wrong', clients.post, null],
  ]) {
    test(`${name}: a wrong secret fails the probe with invalid_client and counts an error`, async () => {
      const issuedBefore = provider.issued(client.client_id);
      const probe = await gateway.probe(name);
      assert.equal(probe.ok, false, JSON.stringify(probe));
      const token = step(probe, 'system_token');
      assert.equal(token.ok, false);
      assert.match(token.detail, /refused/);
      assert.match(token.detail, /401/);
      assert.match(token.detail, /invalid_client/);
      assert.ok(!token.detail.includes(client.client_secret), 'the probe detail must not carry the secret');
      assert.deepEqual(await gateway.tokenFetches(name), { ok: 0, error: 1 });

      const last = provider.requests.at(-1);
      assert.equal(last.status, 401);
      assert.equal(last.error, 'invalid_client');
      assert.equal(last.authScheme, scheme);
      assert.equal(provider.issued(client.client_id), issuedBefore);

      // An action on that connection fails as a token-endpoint problem, not a backend one.
      const conversation = await gateway.openConversation(name);
      const { status, json } = await gateway.runAction(conversation, 'ping');
      assert.equal(status, 502, JSON.stringify(json));
      assert.equal(json.type, 'urn:deskbridge:problem:token_endpoint_error');
    });
  }

  test('no client secret reaches the gateway log', () => {
    const log = gateway.log();
    for (const client of [clients.basic, clients.post, clients.awkward]) {
      assert.ok(!log.includes(client.client_secret), `the log carries ${client.client_id}'s secret`);
    }
  });
});
