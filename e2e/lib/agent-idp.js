// The company's identity provider for agents, and a gateway whose console
// signs agents in there: panva's oidc-provider (an OpenID Certified provider
// none of us wrote) with its development login and consent pages, and the
// real `deskbridge serve` with `[console.oidc]`.
//
// The browser reaches the gateway as http://localhost:PORT and the provider
// as http://127.0.0.1:PORT: two sites, as a company's desk and its identity
// provider are, so the way back from the provider is a cross-site
// navigation and the cookies' SameSite rules are the real ones.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import Provider from 'oidc-provider';

import { deskbridgeBinary, freePort } from './demo.js';

export const CLIENT_ID = 'deskbridge-console';

/** The provider's users: their groups, as a directory would hold them. */
export const USERS = {
  ana: { name: 'Ana Lima', groups: ['staff', 'cx-supervisors'] },
  zed: { name: 'Zed Moss', groups: ['staff', 'sales'] },
};

function listen(server, port) {
  return new Promise((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolveListen());
  });
}

/** oidc-provider, with the console as a confidential client (client_secret_basic). */
export async function startAgentIdp({ redirectUri, postLogoutRedirectUri, backchannelLogoutUri, clientSecret }) {
  const server = createServer();
  await listen(server, 0);
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: clientSecret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: [redirectUri],
        post_logout_redirect_uris: [postLogoutRedirectUri],
        // The provider tells the console, server to server, when a session ends there.
        backchannel_logout_uri: backchannelLogoutUri,
        backchannel_logout_session_required: true,
      },
    ],
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    // `groups` comes with the profile scope, from userinfo: the ID token
    // of a code flow carries only what the provider must put there.
    claims: { openid: ['sub'], profile: ['name', 'preferred_username', 'groups'], email: ['email'] },
    findAccount: async (_ctx, sub) =>
      USERS[sub] && {
        accountId: sub,
        claims: async () => ({
          sub,
          preferred_username: sub,
          name: USERS[sub].name,
          groups: USERS[sub].groups,
          email: `${sub}@example.com`,
        }),
      },
    pkce: { required: () => true },
    // The provider refuses to call loopback addresses (its SSRF guard); the
    // gateway here is on loopback, as a real one is not.
    fetch: (url, options) => globalThis.fetch(url, { ...options, dispatcher: undefined }),
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: true },
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error', err));
  provider.on('backchannel.error', (_ctx, err) => console.error('oidc-provider backchannel.error', err));
  server.on('request', provider.callback());
  return {
    issuer,
    close: () =>
      new Promise((resolveClose) => {
        server.closeAllConnections?.();
        server.close(() => resolveClose());
      }),
  };
}

/**
 * A gateway whose console signs agents in at the provider only (local
 * passwords off), its roles from the `groups` claim.
 */
export async function startIdpGateway() {
  const port = await freePort();
  const url = `http://localhost:${port}`;
  const clientSecret = randomBytes(24).toString('base64url');
  const idp = await startAgentIdp({
    redirectUri: `${url}/console/oidc/callback`,
    postLogoutRedirectUri: `${url}/console/`,
    backchannelLogoutUri: `${url}/console/oidc/backchannel-logout`,
    clientSecret,
  });
  const workdir = mkdtempSync(join(tmpdir(), 'deskbridge-e2e-idp-'));
  const configPath = join(workdir, 'gateway.toml');
  const toml = (value) => JSON.stringify(value);
  writeFileSync(
    configPath,
    [
      '[server]',
      `data_dir = ${toml(join(workdir, 'data'))}`,
      '[console]',
      // Plain HTTP on loopback: the only place a console cookie may lack Secure.
      'secure_cookies = false',
      '[console.oidc]',
      `issuer = ${toml(idp.issuer)}`,
      `client_id = ${toml(CLIENT_ID)}`,
      'client_secret = { env = "CONSOLE_OIDC_SECRET" }',
      `redirect_url = ${toml(`${url}/console/oidc/callback`)}`,
      'display_name = "Acme SSO"',
      'scopes = ["openid", "profile", "email"]',
      'role_claim = "groups"',
      'role_map = { "cx-agents" = "agent", "cx-supervisors" = "supervisor", "cx-admins" = "admin" }',
      'name_claim = "preferred_username"',
      'passwords = false',
      '',
    ].join('\n'),
  );
  const logPath = join(workdir, 'gateway.log');
  const logFd = openSync(logPath, 'w');
  const child = spawn(deskbridgeBinary(), ['serve', '--config', configPath, '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, CONSOLE_OIDC_SECRET: clientSecret, RUST_LOG: process.env.RUST_LOG ?? 'info' },
    stdio: ['ignore', 'pipe', logFd],
  });
  closeSync(logFd);
  const log = () => readFileSync(logPath, 'utf8');
  await new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => reject(new Error(`the gateway did not start; log:\n${log()}`)), 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the gateway exited with ${code}; log:\n${log()}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.includes('listening on')) {
        clearTimeout(timer);
        resolveStart();
      }
    });
  });
  child.stdout.resume();
  return {
    url,
    idp,
    log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      await idp.close();
      rmSync(workdir, { recursive: true, force: true });
    },
  };
}
