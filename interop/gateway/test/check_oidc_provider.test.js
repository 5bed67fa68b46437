// `deskbridge check --only system` against panva's oidc-provider, an
// OpenID-certified authorization server none of us wrote: the system-token
// rules must pass for a client registered with client_secret_basic and for
// one registered with client_secret_post, and a wrong configured secret must
// fail system.token_issued (exit 1).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { gatewayBinary, writeGatewayConfig } from '../lib/gateway.js';
import { JWT_RESOURCE, OPAQUE_RESOURCE, SCOPE, makeClients, startProvider } from '../lib/provider.js';

const SYSTEM_RULES = [
  'system.token_issued',
  'system.wrong_secret_refused',
  'system.unknown_grant_refused',
  'system.no_store',
  'system.auth_methods',
];
const CHECK_TIMEOUT_MS = 60_000;

const clients = makeClients();
let provider;
let workdir;
let config;

/** A connection the way the gateway would call the provider (see oidc_provider.test.js). */
const connection = (name, client, authMethod, resource, extra = {}) => ({
  name,
  // Never called: --only system makes no action calls.
  baseUrl: 'http://127.0.0.1:9/unused',
  tokenUrl: provider.tokenUrl,
  clientId: client.client_id,
  secret: client.client_secret,
  authMethod,
  scope: SCOPE,
  resource,
  ...extra,
});

/**
 * Runs `deskbridge check --only system --format json` for one connection.
 * Asynchronous on purpose: the provider answers from this same process.
 */
function check(name) {
  return new Promise((resolveRun, reject) => {
    execFile(
      gatewayBinary(),
      ['check', '--config', config.configPath, '--connection', name, '--only', 'system', '--format', 'json'],
      { env: { ...config.env, DESKBRIDGE_TEST_USERS: '' }, timeout: CHECK_TIMEOUT_MS },
      (error, stdout, stderr) => {
        const code = error ? error.code : 0;
        if (typeof code !== 'number') return reject(new Error(`deskbridge check did not exit: ${error}\n${stderr}`));
        let rules;
        try {
          rules = JSON.parse(stdout);
        } catch {
          return reject(new Error(`exit ${code}, not JSON on stdout:\n${stdout}\n${stderr}`));
        }
        resolveRun({ code, stdout, stderr, rules: Object.fromEntries(rules.map((r) => [r.id, r])), ids: rules.map((r) => r.id) });
      },
    );
  });
}

before(async () => {
  provider = await startProvider(clients);
  workdir = mkdtempSync(join(tmpdir(), 'deskbridge-interop-check-'));
  config = writeGatewayConfig(workdir, [
    connection('oidc-basic', clients.basic, 'client_secret_basic', JWT_RESOURCE),
    connection('oidc-post', clients.post, 'client_secret_post', OPAQUE_RESOURCE),
    connection('oidc-basic-wrong', clients.basic, 'client_secret_basic', JWT_RESOURCE, { secret: `${clients.basic.client_secret}x` }),
    connection('oidc-post-wrong', clients.post, 'client_secret_post', OPAQUE_RESOURCE, { secret: `${clients.post.client_secret}x` }),
  ]);
});

after(async () => {
  await provider?.close();
  if (workdir) rmSync(workdir, { recursive: true, force: true });
});

describe('deskbridge check --only system against oidc-provider', () => {
  for (const [name, client, configured, other] of [
    ['oidc-basic', clients.basic, 'basic', 'post'],
    ['oidc-post', clients.post, 'post', 'basic'],
  ]) {
    test(`${name} (${client.token_endpoint_auth_method}): every system rule passes; exit 0`, async () => {
      const seenBefore = provider.requests.length;
      const run = await check(name);
      const show = JSON.stringify(run.rules, null, 2);
      assert.equal(run.code, 0, `${show}\n${run.stderr}`);
      assert.deepEqual(run.ids, SYSTEM_RULES, show);
      for (const id of ['system.token_issued', 'system.wrong_secret_refused', 'system.unknown_grant_refused', 'system.no_store']) {
        assert.equal(run.rules[id].status, 'pass', `${id}: ${run.rules[id].evidence}`);
      }
      assert.match(run.rules['system.token_issued'].evidence, new RegExp(`^${client.token_endpoint_auth_method}: HTTP 200, token_type Bearer, expires_in 1 h`));
      assert.match(run.rules['system.wrong_secret_refused'].evidence, /HTTP 401 invalid_client/);
      assert.match(run.rules['system.unknown_grant_refused'].evidence, /HTTP 400 unsupported_grant_type/);

      // system.auth_methods tries both methods with the right secret. One
      // might expect oidc-provider to hold each client to its registered
      // token_endpoint_auth_method, but 9.x treats client_secret_basic and
      // client_secret_post as one family: a client registered with either is
      // accepted with either (node_modules/oidc-provider/lib/shared/client_auth.js,
      // `methods = ['client_secret_basic', 'client_secret_post']` for both the
      // form and the Authorization header). So both work and the rule passes.
      // Had the provider refused the unregistered method, that would be its
      // right too (RFC 6749 §2.3.1 requires servers to support Basic, not to
      // accept every method from every client), and the rule would warn,
      // which does not change the exit status.
      const methods = run.rules['system.auth_methods'];
      assert.match(methods.evidence, new RegExp(`\\b${configured}: ok\\b`), methods.evidence);
      assert.match(methods.evidence, new RegExp(`\\b${other}: ok\\b`), methods.evidence);
      assert.equal(methods.status, 'pass', methods.evidence);

      // The provider saw what the check describes: a token for this client
      // with HTTP Basic and one with the secret in the form, then a wrong
      // secret and an unknown grant type, both refused.
      const seen = provider.requests.slice(seenBefore);
      const issued = seen.filter((r) => r.status === 200 && r.clientId === client.client_id);
      assert.deepEqual(issued.map((r) => r.authScheme).sort(), ['Basic', null].sort(), JSON.stringify(seen));
      assert.ok(seen.some((r) => r.status === 401 && r.error === 'invalid_client'), JSON.stringify(seen));
      assert.ok(seen.some((r) => r.status === 400 && r.error === 'unsupported_grant_type'), JSON.stringify(seen));

      // No secret and no token on either stream.
      for (const out of [run.stdout, run.stderr]) {
        assert.ok(!out.includes(client.client_secret), 'a client secret was printed');
        assert.ok(!out.includes('eyJ'), 'a JWT was printed');
      }
    });
  }

  for (const [name, client] of [
    ['oidc-basic-wrong', clients.basic],
    ['oidc-post-wrong', clients.post],
  ]) {
    test(`${name}: a wrong configured secret fails system.token_issued; exit 1`, async () => {
      const run = await check(name);
      const show = JSON.stringify(run.rules, null, 2);
      assert.equal(run.code, 1, `${show}\n${run.stderr}`);
      assert.deepEqual(run.ids, SYSTEM_RULES, show);
      const issued = run.rules['system.token_issued'];
      assert.equal(issued.status, 'fail', show);
      assert.match(issued.evidence, /HTTP 401 invalid_client/);
      assert.notEqual(issued.fix, '');
      // With no token there is no response to judge for caching.
      assert.equal(run.rules['system.no_store'].status, 'skip', show);
      assert.equal(run.rules['system.auth_methods'].status, 'fail', show);
      for (const out of [run.stdout, run.stderr]) {
        assert.ok(!out.includes(client.client_secret), 'a client secret was printed');
      }
    });
  }
});
