// panva's oidc-provider as the identity provider that logs a company's
// customers in. Its signing keys are published as it publishes them by
// default: an RSA key and an Ed25519 key, neither with `alg`, so a verifier
// must take every algorithm the key type allows (PS256 from the RSA key,
// the fully specified Ed25519 from the OKP key).
//
// Customers log in through the provider's development interactions (a
// `login`/`password` form that takes any password, then a consent form),
// with the authorization code flow and PKCE. Their `sub` is pairwise: an
// opaque keyed hash of the login, the same every time.

import { createHmac, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

/** The audience of every JWT access token the provider issues, whatever its resource. */
export const AUDIENCE = 'deskbridge';
/** Never served: check stops at the redirect and takes the code. */
export const REDIRECT_URI = 'http://127.0.0.1:9/callback';
/** Resource indicators, one per signing algorithm of the access token. */
export const RESOURCES = {
  PS256: 'https://api.acme.test/ps256',
  Ed25519: 'https://api.acme.test/ed25519',
  EdDSA: 'https://api.acme.test/eddsa',
  RS256: 'https://api.acme.test/rs256',
};
export const SCOPE = 'orders:read';

const secret = () => randomBytes(32).toString('base64url');

/**
 * The provider's clients: `machine` gets access tokens for a customer-like
 * subject by client credentials (its id is opaque, as a customer's `sub`
 * must be); `web` is confidential (client_secret_basic) and gets PS256 ID
 * tokens; `app` is public (PKCE only) and gets access tokens.
 */
export function makeClients() {
  return {
    machine: { client_id: `cus_${randomBytes(24).toString('base64url')}`, client_secret: secret() },
    web: { client_id: 'deskbridge-check-web', client_secret: secret() },
    app: { client_id: 'deskbridge-check-app' },
  };
}

function listen(server) {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveListen(`http://127.0.0.1:${server.address().port}`));
  });
}

export async function startCustomerIdp(clients) {
  const server = createServer();
  const issuer = await listen(server);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ed = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  const pairwiseKey = randomBytes(32);

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clients.machine.client_id,
        client_secret: clients.machine.client_secret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: SCOPE,
      },
      {
        client_id: clients.web.client_id,
        client_secret: clients.web.client_secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: [REDIRECT_URI],
        subject_type: 'pairwise',
        id_token_signed_response_alg: 'PS256',
      },
      {
        client_id: clients.app.client_id,
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: [REDIRECT_URI],
        subject_type: 'pairwise',
        id_token_signed_response_alg: 'Ed25519',
      },
    ],
    // What oidc-provider publishes when it is given keys without `alg`.
    jwks: { keys: [{ ...rsa, kid: 'rsa-no-alg' }, { ...ed, kid: 'ed-no-alg' }] },
    cookies: { keys: [secret()] },
    scopes: ['openid', SCOPE],
    subjectTypes: ['public', 'pairwise'],
    pairwiseIdentifier: async (_ctx, accountId) =>
      `cus_${createHmac('sha256', pairwiseKey).update(accountId).digest('base64url')}`,
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    enabledJWA: {
      idTokenSigningAlgValues: ['RS256', 'PS256', 'ES256', 'Ed25519', 'EdDSA'],
    },
    pkce: { required: () => true },
    ttl: { ClientCredentials: 3600 },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          const alg = Object.keys(RESOURCES).find((a) => RESOURCES[a] === indicator);
          if (!alg) throw new errors.InvalidTarget();
          return { scope: SCOPE, audience: AUDIENCE, accessTokenFormat: 'jwt', accessTokenTTL: 3600, jwt: { sign: { alg } } };
        },
      },
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));
  server.on('request', provider.callback());

  return {
    issuer,
    jwksUrl: `${issuer}/jwks`,
    /** A JWT access token for `resource`, by client credentials; its `sub` is the machine client's id. */
    accessToken: async (resource) => {
      const response = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from(`${clients.machine.client_id}:${clients.machine.client_secret}`).toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: SCOPE, resource }),
      });
      const body = await response.json();
      if (response.status !== 200) throw new Error(`token: HTTP ${response.status}: ${JSON.stringify(body)}`);
      return body.access_token;
    },
    jwks: async () => (await fetch(`${issuer}/jwks`)).json(),
    close: () =>
      new Promise((resolveClose) => {
        server.closeAllConnections?.();
        server.close(() => resolveClose());
      }),
  };
}
