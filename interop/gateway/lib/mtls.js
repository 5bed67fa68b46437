// oidc-provider as a token endpoint that authenticates its client by the
// TLS certificate alone (RFC 8705 §2.1, tls_client_auth), served over HTTPS
// with a CA made here by openssl, plus a resource server that accepts the
// provider's JWT access tokens.

import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';

import * as jose from 'jose';
import Provider from 'oidc-provider';

export const SCOPE = 'profile:read';
export const RESOURCE = 'https://api.deskbridge.test/mtls';
export const CLIENT_DN = 'CN=deskbridge-gateway';

const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });

/** A key and a certificate signed by `ca` (or self-signed without one), as PEM files in `dir`. */
function issue(dir, name, subject, extensions, ca) {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, extensions);
  if (ca) {
    const csr = join(dir, `${name}.csr`);
    openssl('req', '-new', '-key', key, '-subj', subject, '-out', csr);
    openssl('x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-sha256', '-extfile', ext, '-out', cert);
  } else {
    openssl('req', '-x509', '-new', '-key', key, '-subj', subject, '-days', '2', '-sha256', '-extensions', 'v3', '-config', extConfig(dir, name, extensions), '-out', cert);
  }
  return { key, cert };
}

function extConfig(dir, name, extensions) {
  const path = join(dir, `${name}.cnf`);
  writeFileSync(path, `[req]\ndistinguished_name = dn\n[dn]\n[v3]\n${extensions}\n`);
  return path;
}

/** The test's PKI: one CA for the provider's server certificate and the gateway's client certificate, and a stranger's certificate no CA here issued. */
export function makePki(dir) {
  const ca = issue(dir, 'ca', '/CN=interop CA', 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign');
  return {
    ca,
    server: issue(dir, 'server', '/CN=127.0.0.1', 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth', ca),
    gateway: issue(dir, 'gateway', `/${CLIENT_DN}`, 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth', ca),
    // The same subject, signed by nobody the provider trusts.
    stranger: issue(dir, 'stranger', `/${CLIENT_DN}`, 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth'),
  };
}

function listen(server, scheme) {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveListen(`${scheme}://127.0.0.1:${server.address().port}`));
  });
}

function close(server) {
  return new Promise((resolveClose) => {
    server.closeAllConnections?.();
    server.close(() => resolveClose());
  });
}

/**
 * The provider over HTTPS. It asks every client for a certificate and lets
 * the handshake through without one (so a refusal is the provider's own,
 * `invalid_client`); `certificateAuthorized` is whether the certificate
 * chains to the CA.
 */
export async function startMtlsProvider(pki, clientId) {
  const server = createHttpsServer({
    key: readFileSync(pki.server.key),
    cert: readFileSync(pki.server.cert),
    ca: readFileSync(pki.ca.cert),
    requestCert: true,
    rejectUnauthorized: false,
  });
  const issuer = await listen(server, 'https');
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'mtls-1', use: 'sig', alg: 'RS256' };
  const peer = (ctx) => ctx.socket.getPeerX509Certificate?.();
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      token_endpoint_auth_method: 'tls_client_auth',
      tls_client_auth_subject_dn: CLIENT_DN,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: SCOPE,
    }],
    clientAuthMethods: ['tls_client_auth'],
    scopes: [SCOPE],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      mTLS: {
        enabled: true,
        tlsClientAuth: true,
        getCertificate: (ctx) => peer(ctx)?.toString(),
        certificateAuthorized: (ctx) => ctx.socket.authorized === true,
        // Node prints the subject one RDN a line: `CN=deskbridge-gateway`.
        certificateSubjectMatches: (ctx, property, expected) =>
          property === 'tls_client_auth_subject_dn' && peer(ctx)?.subject.split('\n').join(',') === expected,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        useGrantedResource: async () => false,
        getResourceServerInfo: async () => ({ scope: SCOPE, audience: RESOURCE, accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'RS256' } } }),
      },
    },
  });
  const requests = [];
  provider.use(async (ctx, next) => {
    if (ctx.path !== '/token') return next();
    const record = { authScheme: ctx.get('authorization').split(' ')[0] || null, certificate: Boolean(peer(ctx)) };
    requests.push(record);
    await next();
    record.status = ctx.status;
    record.error = ctx.body?.error;
    record.params = ctx.oidc?.params ? Object.keys(ctx.oidc.params).filter((k) => ctx.oidc.params[k] !== undefined) : [];
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));
  server.on('request', provider.callback());
  return { issuer, tokenUrl: `${issuer}/token`, publicKey, requests, close: () => close(server) };
}

/** A resource server that takes the provider's JWT access tokens, verified with its public key. */
export async function startResourceServer(provider) {
  const seen = [];
  const server = createHttpServer(async (req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method === 'GET') return reply(200, { status: 'ok' });
    const token = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    try {
      const { payload } = await jose.jwtVerify(token ?? '', provider.publicKey, { issuer: provider.issuer, audience: RESOURCE, typ: 'at+jwt' });
      seen.push(payload);
      return reply(200, { client_id: payload.client_id, scope: payload.scope });
    } catch {
      return reply(401, { error: 'invalid_token' });
    }
  });
  const url = await listen(server, 'http');
  return { url, seen, close: () => close(server) };
}
