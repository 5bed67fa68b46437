// panva's oidc-provider as the customers' identity provider: the real
// gateway verifies the tokens it issues (keys published without `alg`, as
// oidc-provider publishes them), and `deskbridge check` logs test customers
// in through the provider's own login pages (authorization code + PKCE) and
// runs the login and identifier rules against the tokens it gets.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';

import { gatewayBinary, startGateway } from '../lib/gateway.js';
import { AUDIENCE, REDIRECT_URI, RESOURCES, SCOPE, makeClients, startCustomerIdp } from '../lib/customer_idp.js';

const CHECK_TIMEOUT_MS = 60_000;
const TEST_USERS = 'alice:any-password,bob:any-password';

const clients = makeClients();
let idp;
let gateway;

/** The JWS header of a compact token. */
const header = (token) => JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString());

before(async () => {
  idp = await startCustomerIdp(clients);
  const base = { baseUrl: 'http://127.0.0.1:9/unused', systemAuth: 'none' };
  const identity = (audience) => ({ jwksUrl: idp.jwksUrl, issuer: idp.issuer, audience });
  gateway = await startGateway([
    { ...base, name: 'customers', identity: identity(AUDIENCE) },
    {
      ...base,
      name: 'login-id-token',
      identity: identity(clients.web.client_id),
      customerLogin: {
        flow: 'authorization_code',
        issuer: idp.issuer,
        client_id: clients.web.client_id,
        client_secret: clients.web.client_secret,
        redirect_uri: REDIRECT_URI,
        scope: 'openid',
        username_field: 'login',
        password_field: 'password',
      },
    },
    {
      ...base,
      name: 'login-access-token',
      identity: identity(AUDIENCE),
      customerLogin: {
        flow: 'authorization_code',
        issuer: idp.issuer,
        client_id: clients.app.client_id,
        redirect_uri: REDIRECT_URI,
        scope: `openid ${SCOPE}`,
        resource: RESOURCES.Ed25519,
        username_field: 'login',
        password_field: 'password',
        token_pointer: '/access_token',
      },
    },
  ]);
});

after(async () => {
  const code = await gateway?.stop();
  await idp?.close();
  if (code !== undefined && code !== 0) throw new Error(`the gateway exited with ${code} on SIGTERM; log:\n${gateway.log()}`);
  gateway?.cleanup();
});

describe('the gateway verifies customer tokens oidc-provider issues', () => {
  test('its keys are published without alg', async () => {
    const { keys } = await idp.jwks();
    assert.deepEqual(keys.map((k) => [k.kty, k.alg]).sort(), [['OKP', undefined], ['RSA', undefined]]);
  });

  for (const alg of Object.keys(RESOURCES)) {
    test(`a token signed ${alg} opens an authenticated session`, async () => {
      const token = await idp.accessToken(RESOURCES[alg]);
      assert.equal(header(token).alg, alg);
      const { status, json } = await gateway.openSession('customers', token);
      assert.equal(status, 201, JSON.stringify(json));
      assert.equal(json.authenticated, true);
    });
  }
});

/** `deskbridge check --only login,identifier --format json` for one connection. */
function check(name) {
  return new Promise((resolveRun, reject) => {
    execFile(
      gatewayBinary(),
      ['check', '--config', `${gateway.workdir}/gateway.toml`, '--connection', name, '--only', 'login,identifier', '--format', 'json'],
      { env: { ...gateway.env, DESKBRIDGE_TEST_USERS: TEST_USERS }, timeout: CHECK_TIMEOUT_MS },
      (error, stdout, stderr) => {
        const code = error ? error.code : 0;
        if (typeof code !== 'number') return reject(new Error(`deskbridge check did not exit: ${error}\n${stderr}`));
        let rules;
        try {
          rules = JSON.parse(stdout);
        } catch {
          return reject(new Error(`exit ${code}, not JSON on stdout:\n${stdout}\n${stderr}`));
        }
        resolveRun({ code, stdout, stderr, rules: Object.fromEntries(rules.map((r) => [r.id, r])) });
      },
    );
  });
}

describe('deskbridge check logs customers in at oidc-provider (authorization code + PKCE)', () => {
  for (const [name, what, alg] of [
    ['login-id-token', 'the ID token (PS256, confidential client)', 'PS256'],
    ['login-access-token', 'the access token at /access_token (Ed25519, public client)', 'Ed25519'],
  ]) {
    test(`${name}: ${what} passes every login and identifier rule but the dev login's password check`, async () => {
      const run = await check(name);
      const show = JSON.stringify(run.rules, null, 2);
      for (const id of [
        'login.test_users',
        'login.credential',
        'login.lifetime',
        'login.jwt_verifies',
        'identifier.consistent',
        'identifier.unique',
        'identifier.opaque',
      ]) {
        assert.equal(run.rules[id]?.status, 'pass', `${id}: ${show}\n${run.stderr}`);
      }
      assert.match(run.rules['login.jwt_verifies'].evidence, new RegExp(`\\b${alg} key (rsa|ed)-no-alg\\b`), show);
      // oidc-provider's development login takes any password: check says so.
      for (const id of ['login.wrong_password_refused', 'login.no_user_enumeration']) {
        assert.equal(run.rules[id].status, 'fail', show);
        assert.match(run.rules[id].evidence, /the provider issued a code and the token endpoint answered HTTP 200/, show);
      }
      assert.equal(run.code, 1, show);
      for (const out of [run.stdout, run.stderr]) {
        assert.ok(!out.includes('eyJ'), 'a token was printed');
        assert.ok(!out.includes(clients.web.client_secret), 'a client secret was printed');
      }
    });
  }
});
