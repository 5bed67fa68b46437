// A vendor-style token endpoint, as in the vendor's published example (the
// contract, CONTRACT.md §3): `grant_type` only in the query string, the
// client credentials only in the form body, and a response whose `expires_in`
// is a string and whose `scope` is "client_credentials". Plus the vendor's
// API, which accepts only tokens this endpoint issued and that have not expired.

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

export async function startVendor(clients) {
  const tokens = new Map(); // access token -> { clientId, expiresAt }
  const tokenRequests = [];
  const apiCalls = [];

  function tokenEndpoint(req, url, body, reply) {
    const form = new URLSearchParams(body);
    const record = {
      clientId: form.get('client_id'),
      query: Object.fromEntries(url.searchParams),
      formKeys: [...form.keys()],
      authorization: req.headers.authorization !== undefined,
    };
    tokenRequests.push(record);
    const refuse = (status, error, reason) => {
      record.status = status;
      record.refused = reason;
      return reply(status, { error, error_description: reason });
    };
    if (req.method !== 'POST') return refuse(405, 'invalid_request', 'POST only');
    if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      return refuse(400, 'invalid_request', `content-type ${req.headers['content-type']} is not a form`);
    }
    if (url.searchParams.getAll('grant_type').length !== 1 || url.searchParams.get('grant_type') !== 'client_credentials') {
      return refuse(400, 'invalid_request', 'grant_type=client_credentials must be in the query string');
    }
    if (form.has('grant_type')) return refuse(400, 'invalid_request', 'grant_type must not be in the body');
    if (req.headers.authorization !== undefined) {
      return refuse(400, 'invalid_request', 'client credentials go in the form body, not an Authorization header');
    }
    const client = clients[form.get('client_id')];
    if (!client || form.get('client_secret') !== client.secret) return refuse(401, 'invalid_client', 'unknown client or wrong secret');
    const token = randomBytes(24).toString('hex');
    tokens.set(token, { clientId: form.get('client_id'), expiresAt: Date.now() + client.expiresIn * 1000 });
    record.status = 200;
    return reply(200, {
      token_type: 'Bearer',
      access_token: token,
      expires_in: String(client.expiresIn),
      issued_at: String(Date.now()),
      client_id: form.get('client_id'),
      scope: 'client_credentials',
    });
  }

  function api(req, url, reply) {
    if (req.method === 'GET' && url.pathname === '/') return reply(200, { status: 'ok' });
    const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
    const issued = m && tokens.get(m[1]);
    const ok = Boolean(issued && issued.expiresAt > Date.now());
    apiCalls.push({ path: url.pathname, ok, clientId: issued?.clientId });
    if (!ok) return reply(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' });
    return reply(200, { client_id: issued.clientId, path: url.pathname });
  }

  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const reply = (status, json, headers = {}) => {
        res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
        res.end(JSON.stringify(json));
      };
      const url = new URL(req.url, 'http://localhost');
      if (url.pathname === '/access_token') return tokenEndpoint(req, url, Buffer.concat(chunks).toString('utf8'), reply);
      return api(req, url, reply);
    });
  });
  const url = await new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveListen(`http://127.0.0.1:${server.address().port}`));
  });
  return {
    url,
    tokenUrl: `${url}/access_token`,
    tokenRequests,
    apiCalls,
    /** Forgets every token issued so far, as a vendor rotating its keys would. */
    revokeAll: () => tokens.clear(),
    issued: (clientId) => tokenRequests.filter((r) => r.clientId === clientId && r.status === 200).length,
    close: () => new Promise((done) => {
      server.closeAllConnections();
      server.close(() => done());
    }),
  };
}
