// A company's own web site, as small as it gets, for the web SDK examples
// (docs/web-sdk.md). No dependencies: `node server.mjs`.
//
// It signs its customers in against the company's login (POST
// /customer_authenticate), keeps them in a session of its own (an HttpOnly
// cookie), and answers POST /fresh-token with a fresh customer token for the
// signed-in customer: the server-side endpoint a page's contextProvider
// calls. The browser never sees a password after sign-in, nor any cookie of
// the company's login.
//
// Environment: GATEWAY_URL, APP_KEY (the web channel's), CONNECTION (acme),
// COMPANY_URL (the company's login, here the reference backend), PORT,
// SDK_INTEGRITY (the sha384 value from docs/web-sdk.md or the gateway's log;
// computed from the gateway's SDK when left out).

import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const env = process.env;
const GATEWAY = (env.GATEWAY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const COMPANY = (env.COMPANY_URL || 'http://127.0.0.1:8081').replace(/\/+$/, '');
const PORT = Number(env.PORT || 5173);
const site = { gateway: GATEWAY, appKey: env.APP_KEY || '', channel: env.CHANNEL || 'web', connection: env.CONNECTION || 'acme' };

// The site's own sessions, in memory: session id -> { username, hint, companyCookie }.
const sessions = new Map();
// How often the company was asked for a fresh token (the tests read it).
const stats = { freshTokens: 0 };

async function sdkIntegrity() {
  if (env.SDK_INTEGRITY) return env.SDK_INTEGRITY;
  const body = Buffer.from(await (await fetch(`${GATEWAY}/sdk/v1/deskbridge.js`)).arrayBuffer());
  return `sha384-${createHash('sha384').update(body).digest('base64')}`;
}

function cookieOf(req, name) {
  for (const part of (req.headers.cookie || '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return null;
}

function send(res, status, body, headers = {}) {
  const json = typeof body !== 'string';
  res.writeHead(status, {
    'content-type': json ? 'application/json' : 'text/plain; charset=utf-8',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(json ? JSON.stringify(body) : body);
}

async function readJson(req) {
  let text = '';
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 10_000) throw new Error('too large');
  }
  return JSON.parse(text || '{}');
}

// The page's own calls only: a browser marks a request from another site.
function sameOrigin(req) {
  const site = req.headers['sec-fetch-site'];
  return !site || site === 'same-origin';
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

async function file(res, path, replace) {
  let body = await readFile(path, 'utf8');
  if (replace) body = await replace(body);
  res.writeHead(200, {
    'content-type': TYPES[extname(path)] || 'application/octet-stream',
    'cache-control': 'no-cache',
    // Scripts from this site and from the gateway only.
    'content-security-policy': `default-src 'self'; script-src 'self' ${GATEWAY}; connect-src 'self' ${GATEWAY}; style-src 'self' 'unsafe-inline'`,
  });
  res.end(body);
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://site');
  const session = sessions.get(cookieOf(req, 'site_session'));

  if (req.method === 'GET' && url.pathname === '/favicon.ico') return send(res, 204, '');
  if (req.method === 'GET' && url.pathname === '/config.json') return send(res, 200, site);
  if (req.method === 'GET' && url.pathname === '/stats') return send(res, 200, stats);
  if (req.method === 'GET' && url.pathname === '/me') {
    // null: nobody is signed in (not an error for the page).
    return send(res, 200, session ? { username: session.username, hint: session.hint } : null);
  }

  if (req.method === 'POST') {
    if (!sameOrigin(req)) return send(res, 403, { error: 'cross-site request' });
    if (url.pathname === '/login') {
      const { username, password } = await readJson(req);
      const answer = await fetch(`${COMPANY}/customer_authenticate`, {
        method: 'POST',
        body: new URLSearchParams({ username: String(username || ''), password: String(password || '') }),
      });
      if (answer.status !== 200) return send(res, 401, { error: 'the username or password is not correct' });
      // The company's login also started a session there; fresh tokens come from it.
      const companyCookie = (answer.headers.getSetCookie() || []).map((c) => c.split(';')[0]).join('; ');
      const id = randomBytes(32).toString('base64url');
      // An opaque stand-in for the customer, for Deskbridge's customerHint.
      const hint = createHash('sha256').update(`hint:${username}`).digest('base64url').slice(0, 16);
      sessions.set(id, { username: String(username), hint, companyCookie });
      return send(res, 200, { username, hint }, { 'set-cookie': `site_session=${id}; Path=/; HttpOnly; SameSite=Lax` });
    }
    if (url.pathname === '/logout') {
      sessions.delete(cookieOf(req, 'site_session'));
      return send(res, 200, {}, { 'set-cookie': 'site_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0' });
    }
    // The fresh-token endpoint: a new customer token for this site's signed-in customer.
    if (url.pathname === '/fresh-token') {
      if (!session) return send(res, 401, { error: 'not signed in' });
      stats.freshTokens += 1;
      // Here the company's login is the reference backend, which mints a JWT
      // for the session it started; a real site signs one with its own key
      // or asks its identity provider.
      const answer = await fetch(`${COMPANY}/demo/token`, { method: 'POST', headers: { cookie: session.companyCookie } });
      if (answer.status !== 200) return send(res, 401, { error: 'the company session ended' });
      const { JWT, expires_in } = await answer.json(); // strings, as the contract says
      return send(res, 200, { JWT, expires_in });
    }
  }

  if (req.method === 'GET') {
    if (url.pathname === '/' || url.pathname === '/index.html') {
      const integrity = await sdkIntegrity();
      return file(res, join(here, 'plain', 'index.html'), (html) => html.replaceAll('{{GATEWAY}}', GATEWAY).replaceAll('{{INTEGRITY}}', integrity));
    }
    if (url.pathname.startsWith('/plain/')) {
      const path = normalize(join(here, url.pathname));
      if (path.startsWith(join(here, 'plain'))) return file(res, path).catch(() => send(res, 404, 'not found'));
    }
    // The React example's build; every other path under /react/ is one of its routes.
    if (url.pathname === '/react' || url.pathname.startsWith('/react/')) {
      const dist = join(here, 'react', 'dist');
      const path = normalize(join(dist, url.pathname.slice('/react'.length)));
      if (path.startsWith(dist) && extname(path)) return file(res, path).catch(() => send(res, 404, 'not found'));
      return file(res, join(dist, 'index.html')).catch(() => send(res, 404, 'build the React example first: npm run build in examples/web-sdk/react'));
    }
  }
  return send(res, 404, 'not found');
}

createServer((req, res) => {
  handle(req, res).catch(() => send(res, 500, { error: 'the site failed' }));
}).listen(PORT, '127.0.0.1', () => {
  process.stdout.write(`example site listening on http://127.0.0.1:${PORT}\n`);
});
