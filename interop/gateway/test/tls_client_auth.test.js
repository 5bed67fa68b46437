// tls_client_auth (RFC 8705 §2.1) against panva's oidc-provider, an
// authorization server none of us wrote, over HTTPS with a CA made in the
// test: the gateway's client certificate is the whole credential, a
// certificate of another issuer is refused, and `deskbridge check` judges
// both (system.token_issued, system.foreign_certificate_refused).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { gatewayBinary, startGateway, writeGatewayConfig } from '../lib/gateway.js';
import { SCOPE, makePki, startMtlsProvider, startResourceServer } from '../lib/mtls.js';

const CLIENT_ID = 'deskbridge-mtls';
const dir = mkdtempSync(join(tmpdir(), 'deskbridge-interop-mtls-'));
let pki;
let provider;
let rs;
let gateway;

const connection = (name, identity) => ({
  name,
  baseUrl: rs.url,
  tokenUrl: provider.tokenUrl,
  clientId: CLIENT_ID,
  authMethod: 'tls_client_auth',
  scope: SCOPE,
  tls: { caFile: pki.ca.cert, clientCert: identity.cert, clientKey: identity.key },
});

before(async () => {
  pki = makePki(dir);
  provider = await startMtlsProvider(pki, CLIENT_ID);
  rs = await startResourceServer(provider);
  gateway = await startGateway([connection('mtls', pki.gateway), connection('mtls-stranger', pki.stranger)]);
});

after(async () => {
  const code = await gateway?.stop();
  await rs?.close();
  await provider?.close();
  rmSync(dir, { recursive: true, force: true });
  if (code !== undefined && code !== 0) throw new Error(`the gateway exited with ${code} on SIGTERM; log:\n${gateway.log()}`);
  gateway?.cleanup();
});

describe('oidc-provider with tls_client_auth', () => {
  test('the certificate alone gets a token: no secret, no assertion, no Authorization header', async () => {
    const probe = await gateway.probe('mtls');
    assert.equal(probe.ok, true, JSON.stringify(probe));
    const issued = provider.requests.filter((r) => r.status === 200);
    assert.equal(issued.length, 1, JSON.stringify(provider.requests));
    assert.equal(issued[0].authScheme, null);
    assert.equal(issued[0].certificate, true);
    for (const param of ['client_secret', 'client_assertion', 'client_assertion_type']) {
      assert.ok(!issued[0].params.includes(param), JSON.stringify(issued[0].params));
    }
    assert.ok(issued[0].params.includes('client_id'), JSON.stringify(issued[0].params));
  });

  test('the token works at the resource server', async () => {
    const conversation = await gateway.openConversation('mtls');
    const { status, json } = await gateway.runAction(conversation, 'ping');
    assert.equal(status, 200, JSON.stringify(json));
    assert.equal(json.data.client_id, CLIENT_ID);
    assert.equal(json.data.scope, SCOPE);
  });

  test('a certificate of the same subject from another issuer is refused with invalid_client', async () => {
    const before = provider.requests.length;
    const probe = await gateway.probe('mtls-stranger');
    assert.equal(probe.ok, false, JSON.stringify(probe));
    const refused = provider.requests.slice(before);
    assert.ok(refused.length >= 1 && refused.every((r) => r.status === 401 && r.error === 'invalid_client'), JSON.stringify(refused));
  });

  test('deskbridge check: the token is issued, and a foreign certificate is refused', async () => {
    const workdir = mkdtempSync(join(tmpdir(), 'deskbridge-interop-mtls-check-'));
    try {
      const config = writeGatewayConfig(workdir, [connection('mtls', pki.gateway)]);
      // Asynchronous on purpose: the provider answers from this same process.
      const { code, stdout, stderr } = await new Promise((resolveRun) => {
        execFile(
          gatewayBinary(),
          ['check', '--config', config.configPath, '--only', 'system', '--format', 'json'],
          { env: { ...config.env, DESKBRIDGE_TEST_USERS: '' }, timeout: 60_000 },
          (error, out, err) => resolveRun({ code: error ? error.code : 0, stdout: out, stderr: err }),
        );
      });
      assert.equal(code, 0, `${stdout}\n${stderr}`);
      const rules = Object.fromEntries(JSON.parse(stdout).map((r) => [r.id, r]));
      assert.equal(rules['system.token_issued'].status, 'pass', JSON.stringify(rules['system.token_issued']));
      const foreign = rules['system.foreign_certificate_refused'];
      assert.equal(foreign.status, 'pass', JSON.stringify(foreign));
      assert.match(foreign.evidence, /invalid_client/);
    } finally {
      rmSync(workdir, { recursive: true, force: true });
    }
  });
});
