// Runs the real `deskbridge demo` for the browser tests: the reference backend
// (with the demo company site) and the gateway (with the console and the SDK)
// on free loopback ports, in a fresh data directory. It waits for both
// /healthz answers; nothing here sleeps for a fixed time.

import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO_ROOT = resolve(E2E_ROOT, '..');
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;

export function deskbridgeBinary() {
  const path = process.env.DESKBRIDGE_BIN
    ? resolve(process.env.DESKBRIDGE_BIN)
    : join(REPO_ROOT, 'target', 'debug', 'deskbridge');
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`deskbridge binary not found at ${path}: build it with \`cargo build -p deskbridge\` or set DESKBRIDGE_BIN`);
  }
  return path;
}

/** A port nobody listens on right now (bind 0, read it, close). */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

async function until(what, deadline, probe) {
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

export class Demo {
  constructor(fields) {
    Object.assign(this, fields);
  }

  /** The customers' passwords, from <data-dir>/demo-credentials.json. */
  password(username) {
    const user = this.credentials.users.find((u) => u.username === username);
    if (!user) throw new Error(`no demo user ${username}`);
    return user.password;
  }

  /** `deskbridge agent add NAME --role ROLE --password`, the password on stdin. */
  addAgent(name, role, password) {
    const r = spawnSync(this.bin, ['agent', 'add', name, '--role', role, '--password', '--config', join(this.dir, 'gateway.toml')], {
      input: `${password}\n`,
      encoding: 'utf8',
      timeout: 30_000,
    });
    if (r.status !== 0) throw new Error(`agent add ${name} failed (${r.status}): ${r.stderr}`);
    return r.stdout.trim();
  }

  /** An agent token: `deskbridge agent add NAME --role ROLE` prints it once. */
  agentToken(name, role) {
    const r = spawnSync(this.bin, ['agent', 'add', name, '--role', role, '--config', join(this.dir, 'gateway.toml')], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    const token = /dbg_[A-Za-z0-9_-]+/.exec(r.stdout || '');
    if (r.status !== 0 || !token) throw new Error(`agent add ${name} failed (${r.status}): ${r.stderr}`);
    return token[0];
  }

  /** A session opened the way a mobile app opens one (channel "ios", no Origin). */
  async openSession(body) {
    const appKey = readFileSync(join(this.dir, 'secrets', 'web_app_key'), 'utf8').trim();
    const res = await fetch(`${this.gatewayUrl}/v1/sessions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-deskbridge-app-key': appKey },
      body: JSON.stringify({ channel: 'ios', connection: 'acme', ...body }),
    });
    if (res.status !== 201) throw new Error(`POST /v1/sessions: ${res.status} ${await res.text()}`);
    return res.json();
  }

  /** POST /customer_authenticate at the backend, as the customer's mobile app would. */
  async customerLogin(username) {
    const res = await fetch(`${this.backendUrl}/customer_authenticate`, {
      method: 'POST',
      body: new URLSearchParams({ username, password: this.password(username) }),
    });
    if (res.status !== 200) throw new Error(`customer_authenticate ${username}: ${res.status} ${await res.text()}`);
    return res.json();
  }

  log() {
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  async stop() {
    const child = this.process;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    await new Promise((r) => this.logStream.end(r));
    if (!process.env.E2E_KEEP_DATA) rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Starts `deskbridge demo` with customer JWTs that live `ttl` seconds.
 * `logPath`: where its stdout and stderr go. `allowOrigins`: other pages'
 * origins for the web channel (`--allow-origin`); `cardOrigins`: desk
 * origins that may frame the customer card.
 */
export async function startDemo({ ttl, logPath, allowOrigins = [], cardOrigins = [] }) {
  const bin = deskbridgeBinary();
  const dir = mkdtempSync(join(tmpdir(), 'deskbridge-e2e-'));
  const backendPort = await freePort();
  const gatewayPort = await freePort();
  const backendUrl = `http://127.0.0.1:${backendPort}`;
  const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
  const logStream = createWriteStream(logPath);
  const child = spawn(
    bin,
    [
      'demo',
      '--data-dir', dir,
      '--backend-listen', `127.0.0.1:${backendPort}`,
      '--gateway-listen', `127.0.0.1:${gatewayPort}`,
      '--customer-token-ttl', String(ttl),
      ...allowOrigins.flatMap((o) => ['--allow-origin', o]),
      ...cardOrigins.flatMap((o) => ['--card-origin', o]),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, DESKBRIDGE_LOG: process.env.DESKBRIDGE_LOG || 'info' } },
  );
  child.stdout.pipe(logStream, { end: false });
  child.stderr.pipe(logStream, { end: false });
  let exited = null;
  child.once('exit', (code, signal) => {
    exited = `deskbridge demo exited (${code ?? signal}) before it was ready; see ${logPath}`;
  });

  const deadline = Date.now() + START_TIMEOUT_MS;
  const healthy = (url) => async () => {
    if (exited) throw Object.assign(new Error(exited), { fatal: true });
    const res = await fetch(`${url}/healthz`);
    return res.status === 200;
  };
  try {
    await until(`${backendUrl}/healthz`, deadline, healthy(backendUrl));
    await until(`${gatewayUrl}/healthz`, deadline, healthy(gatewayUrl));
    if (exited) throw new Error(exited);
    const credentials = JSON.parse(readFileSync(join(dir, 'demo-credentials.json'), 'utf8'));
    const consolePassword = readFileSync(join(dir, 'secrets', 'console_password'), 'utf8').trim();
    const config = await (await fetch(`${backendUrl}/demo/config.json`)).json();
    return new Demo({
      bin, dir, process: child, logPath, logStream, backendUrl, gatewayUrl, credentials, config,
      agent: { username: 'demo-agent', password: consolePassword },
    });
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
}
