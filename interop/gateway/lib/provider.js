// panva's oidc-provider (an OpenID-certified authorization server) as the
// company's token endpoint, plus a small resource server that accepts only
// the tokens that provider issued: JWT access tokens verified against its
// JWKS (jose), opaque ones through its introspection endpoint.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

export const SCOPE = 'profile:read';
/** Resource indicators (RFC 8707) the provider knows, one per token format. */
export const JWT_RESOURCE = 'https://api.deskbridge.test/jwt';
export const OPAQUE_RESOURCE = 'urn:deskbridge:api:opaque';

const RESOURCE_SERVERS = {
  [JWT_RESOURCE]: { scope: SCOPE, audience: JWT_RESOURCE, accessTokenFormat: 'jwt', accessTokenTTL: 3600, jwt: { sign: { alg: 'RS256' } } },
  [OPAQUE_RESOURCE]: { scope: SCOPE, audience: OPAQUE_RESOURCE, accessTokenFormat: 'opaque', accessTokenTTL: 3600 },
};

const secret = () => randomBytes(32).toString('base64url');

/** The provider's registered clients; the secrets are fresh per run. */
export function makeClients() {
  return {
    basic: { client_id: 'deskbridge-basic', client_secret: secret(), token_endpoint_auth_method: 'client_secret_basic' },
    post: { client_id: 'deskbridge-post', client_secret: secret(), token_endpoint_auth_method: 'client_secret_post' },
    // RFC 6749 §2.3.1: with HTTP Basic, the id and secret are form-urlencoded
    // before base64; these have every character where that matters.
    awkward: {
      client_id: 'deskbridge:awkward id+%',
      client_secret: `a+b/c=d%e:f g&h~!*'()${secret()}`,
      token_endpoint_auth_method: 'client_secret_basic',
    },
    introspector: { client_id: 'resource-server', client_secret: secret(), token_endpoint_auth_method: 'client_secret_basic' },
    // private_key_jwt (RFC 7523): the provider holds only the public key;
    // the gateway signs with the private one (`_privatePem`, not metadata).
    signed: signingClient('deskbridge-signed', 'ES256'),
  };
}

/** A private_key_jwt client with a fresh EC P-256 key. */
function signingClient(clientId, alg) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    client_id: clientId,
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: alg,
    jwks: { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: `${clientId}-1`, use: 'sig', alg }] },
    _privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }),
    _keyId: `${clientId}-1`,
  };
}

/** A client's registered metadata: what is not the test's own (`_…`). */
const metadata = (client) => Object.fromEntries(Object.entries(client).filter(([k]) => !k.startsWith('_')));

function listen(server) {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveListen(`http://127.0.0.1:${server.address().port}`));
  });
}

function close(server) {
  return new Promise((resolveClose) => {
    server.closeAllConnections?.();
    server.close(() => resolveClose());
  });
}

export async function startProvider(clients) {
  const server = createServer();
  const issuer = await listen(server);
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'interop-1', use: 'sig', alg: 'RS256' };

  const provider = new Provider(issuer, {
    clients: Object.values(clients).map((c) => ({
      ...metadata(c),
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: SCOPE,
    })),
    scopes: [SCOPE],
    jwks: { keys: [signingKey] },
    cookies: { keys: [secret()] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        allowedPolicy: async (_ctx, client) => client.clientId === clients.introspector.client_id,
      },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx, indicator) => {
          const info = RESOURCE_SERVERS[indicator];
          if (!info) throw new errors.InvalidTarget();
          return info;
        },
      },
    },
    ttl: { ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 600 },
  });

  // What reached the token endpoint, as the provider saw it, before it parsed
  // anything: the auth scheme, the query and the form parameter names.
  const requests = [];
  provider.use(async (ctx, next) => {
    if (ctx.path !== '/token') return next();
    const record = {
      method: ctx.method,
      query: Object.fromEntries(new URLSearchParams(ctx.querystring)),
      authScheme: ctx.get('authorization').split(' ')[0] || null,
    };
    requests.push(record);
    await next();
    record.status = ctx.status;
    record.clientId = ctx.oidc?.client?.clientId;
    record.params = ctx.oidc?.params ? Object.keys(ctx.oidc.params).filter((k) => ctx.oidc.params[k] !== undefined) : [];
    record.error = ctx.body?.error;
  });
  // The provider answers errors itself; keep them out of the test output.
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));

  server.on('request', provider.callback());

  return {
    issuer,
    tokenUrl: `${issuer}/token`,
    provider,
    /** RFC 7009 revocation, by the client the token was issued to (client_secret_post). */
    revoke: async (client, token) => {
      const response = await fetch(`${issuer}/token/revocation`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token, client_id: client.client_id, client_secret: client.client_secret }),
      });
      if (response.status !== 200) throw new Error(`revocation answered ${response.status}: ${await response.text()}`);
    },
    requests,
    /** Token requests by a client that got a token. */
    issued: (clientId) => requests.filter((r) => r.clientId === clientId && r.status === 200).length,
    close: () => close(server),
  };
}

/**
 * A resource server for the provider's tokens. `/jwt/...` verifies a JWT
 * access token (RFC 9068) against the provider's JWKS; `/opaque/...` asks the
 * provider's introspection endpoint (RFC 7662). GET of either prefix is a
 * health answer, for the gateway's probe.
 */
export async function startResourceServer({ issuer, introspector }) {
  const jwks = jose.createRemoteJWKSet(new URL(`${issuer}/jwks`));
  const seen = [];

  async function verify(kind, token) {
    if (kind === 'jwt') {
      const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
        issuer,
        audience: JWT_RESOURCE,
        typ: 'at+jwt',
      });
      return { verified_by: 'jwks', alg: protectedHeader.alg, client_id: payload.client_id, scope: payload.scope, aud: payload.aud };
    }
    const response = await fetch(`${issuer}/token/introspection`, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(introspector.client_id)}:${encodeURIComponent(introspector.client_secret)}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ token }),
    });
    const body = await response.json();
    if (response.status !== 200) throw new Error(`introspection answered ${response.status}: ${JSON.stringify(body)}`);
    if (!body.active) throw new Error('the token is not active');
    if (body.aud !== OPAQUE_RESOURCE) throw new Error(`the token is for ${JSON.stringify(body.aud)}`);
    return { verified_by: 'introspection', client_id: body.client_id, scope: body.scope, aud: body.aud };
  }

  const server = createServer(async (req, res) => {
    const reply = (status, body, headers = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify(body));
    };
    const url = new URL(req.url, 'http://localhost');
    const kind = url.pathname.split('/')[1];
    if (kind !== 'jwt' && kind !== 'opaque') return reply(404, { error: 'not_found' });
    if (req.method === 'GET' && url.pathname === `/${kind}`) return reply(200, { status: 'ok' });
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    const record = { kind, path: url.pathname, method: req.method, customerAuth: req.headers['customer-auth'] };
    seen.push(record);
    if (!m) return reply(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    record.token = m[1];
    try {
      record.claims = await verify(kind, m[1]);
    } catch (e) {
      record.rejected = String(e.message ?? e);
      return reply(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    }
    return reply(200, { ...record.claims, path: url.pathname });
  });
  const url = await listen(server);
  return { url, seen, close: () => close(server) };
}
