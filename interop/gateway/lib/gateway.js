// Runs the real `deskbridge serve` binary for these tests: writes its TOML,
// creates an admin agent, starts it on 127.0.0.1:0 and waits for the printed
// "listening" line and a 200 from /healthz. Nothing here sleeps for a fixed time.

import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const LISTENING = /deskbridge gateway listening on (http:\/\/\S+)/;

export const APP_KEY_HEADER = 'x-deskbridge-app-key';

export function gatewayBinary() {
  const path = process.env.DESKBRIDGE_BIN
    ? resolve(process.env.DESKBRIDGE_BIN)
    : join(REPO_ROOT, 'target', 'debug', 'deskbridge');
  try {
    accessSync(path, constants.X_OK);
  } catch {
    throw new Error(`deskbridge binary not found at ${path}: build it with \`cargo build -p deskbridge\` or point DESKBRIDGE_BIN at it`);
  }
  return path;
}

const toml = (value) => JSON.stringify(value); // a JSON string is a valid TOML basic string

/**
 * One connection of the gateway config. `secret` is the client secret; it is
 * handed to the gateway through an environment variable, never inline.
 */
function connectionToml(c, env, dir) {
  const secretVar = `INTEROP_SECRET_${c.name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
  let credential;
  if (c.authMethod === 'tls_client_auth') {
    // The client certificate of [connections.tls] is the whole credential.
    credential = [];
  } else if (c.privatePem) {
    // private_key_jwt: the key in a file of its own, as an operator would keep it.
    const keyFile = join(dir, `${c.name}.pem`);
    writeFileSync(keyFile, c.privatePem, { mode: 0o600 });
    credential = [`private_key = { file = ${toml(keyFile)} }`, `key_id = ${toml(c.keyId)}`];
  } else {
    env[secretVar] = c.secret;
    credential = [`client_secret = { env = ${toml(secretVar)} }`];
  }
  const lines = [
    '[[connections]]',
    `name = ${toml(c.name)}`,
    `base_url = ${toml(c.baseUrl)}`,
    ...(c.tls
      ? ['[connections.tls]', `ca_file = ${toml(c.tls.caFile)}`, `client_cert = ${toml(c.tls.clientCert)}`, `client_key = ${toml(c.tls.clientKey)}`]
      : []),
    '[connections.system_auth]',
    'kind = "oauth2_client_credentials"',
    `token_url = ${toml(c.tokenUrl)}`,
    `client_id = ${toml(c.clientId)}`,
    ...credential,
    `auth_method = ${toml(c.authMethod)}`,
    `grant_type_in = ${toml(c.grantTypeIn ?? 'body')}`,
  ];
  for (const key of ['scope', 'audience', 'resource']) {
    if (c[key] !== undefined) lines.push(`${key} = ${toml(c[key])}`);
  }
  lines.push('[connections.identity]', 'mode = "opaque"');
  for (const action of c.actions ?? [{ name: 'ping', path: '/ping' }]) {
    lines.push('[[connections.actions]]', `name = ${toml(action.name)}`, `path = ${toml(action.path)}`);
    if (action.method) lines.push(`method = ${toml(action.method)}`);
  }
  return lines.join('\n');
}

export class Gateway {
  constructor({ url, process, logPath, workdir, agentToken, appKey }) {
    Object.assign(this, { url, process, logPath, workdir, agentToken, appKey });
  }

  log() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  async admin(method, path, body) {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.agentToken}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: response.status, json, text };
  }

  /** POST /v1/connections/{name}/probe; returns the parsed body. */
  async probe(connection) {
    const { status, json, text } = await this.admin('POST', `/v1/connections/${encodeURIComponent(connection)}/probe`);
    if (status !== 200) throw new Error(`probe ${connection}: HTTP ${status}: ${text}`);
    return json;
  }

  /** deskbridge_gateway_token_fetches_total for one connection, by outcome. */
  async tokenFetches(connection) {
    const response = await fetch(`${this.url}/metrics`);
    const text = await response.text();
    const counts = { ok: 0, error: 0 };
    for (const line of text.split('\n')) {
      const m = /^deskbridge_gateway_token_fetches_total\{([^}]*)\}\s+(\d+)/.exec(line);
      if (!m) continue;
      const labels = Object.fromEntries([...m[1].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
      if (labels.connection === connection) counts[labels.outcome] = Number(m[2]);
    }
    return counts;
  }

  /** Opens an identified session on `connection` (opaque identity) and returns its conversation id. */
  async openConversation(connection) {
    const response = await fetch(`${this.url}/v1/sessions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', [APP_KEY_HEADER]: this.appKey },
      body: JSON.stringify({
        channel: 'web',
        connection,
        customer_id: randomBytes(24).toString('base64url'),
        auth: { token: `customer-${randomBytes(16).toString('hex')}`, expires_in: 3600 },
      }),
    });
    const body = await response.json();
    if (response.status !== 201) throw new Error(`open session: HTTP ${response.status}: ${JSON.stringify(body)}`);
    return body.conversation_id;
  }

  /** Runs an action as the admin agent; returns { status, json }. */
  async runAction(conversation, action) {
    return this.admin('POST', `/v1/conversations/${conversation}/actions/${action}`);
  }

  /** SIGTERM, then waits for a graceful exit; resolves to the exit code. */
  async stop() {
    const child = this.process;
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    const exited = new Promise((resolveExit) => child.once('exit', (code, signal) => resolveExit(code ?? signal)));
    child.kill('SIGTERM');
    let timer;
    const timeout = new Promise((resolveTimeout) => {
      timer = setTimeout(() => resolveTimeout('timeout'), STOP_TIMEOUT_MS);
    });
    const outcome = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      child.kill('SIGKILL');
      await exited;
      throw new Error(`gateway ignored SIGTERM for ${STOP_TIMEOUT_MS} ms; log:\n${this.log()}`);
    }
    return outcome;
  }

  cleanup() {
    rmSync(this.workdir, { recursive: true, force: true });
  }
}

/**
 * Starts a gateway with the given connections (see connectionToml), one
 * channel "web" and an admin agent.
 */
export async function startGateway(connections) {
  const binary = gatewayBinary();
  const workdir = mkdtempSync(join(tmpdir(), 'deskbridge-interop-gateway-'));
  try {
    return await launch(binary, workdir, connections);
  } catch (e) {
    // The error carries the log; nothing else in the directory is worth keeping.
    rmSync(workdir, { recursive: true, force: true });
    throw e;
  }
}

/**
 * Writes `workdir/gateway.toml` with the given connections (see
 * connectionToml) and one channel "web"; returns its path and the
 * environment (with the secrets) that the deskbridge binary needs to read it.
 */
export function writeGatewayConfig(workdir, connections) {
  const appKey = randomBytes(24).toString('base64url');
  const env = { ...process.env, INTEROP_APP_KEY: appKey, RUST_LOG: process.env.RUST_LOG ?? 'info' };
  const config = [
    '[server]',
    `data_dir = ${toml(join(workdir, 'data'))}`,
    ...connections.map((c) => connectionToml(c, env, workdir)),
    '[[channels]]',
    'name = "web"',
    'app_key = { env = "INTEROP_APP_KEY" }',
    '',
  ].join('\n');
  const configPath = join(workdir, 'gateway.toml');
  writeFileSync(configPath, config);
  return { configPath, env, appKey };
}

async function launch(binary, workdir, connections) {
  const { configPath, env, appKey } = writeGatewayConfig(workdir, connections);

  const { stdout } = await promisify(execFile)(
    binary,
    ['agent', 'add', 'interop-admin', '--role', 'admin', '--config', configPath],
    { env, timeout: START_TIMEOUT_MS },
  );
  const agentToken = stdout.trim().split('\n').pop().trim();
  if (!agentToken) throw new Error('`deskbridge agent add` printed no token');

  const logPath = join(workdir, 'gateway.log');
  const logFd = openSync(logPath, 'w');
  const child = spawn(binary, ['serve', '--config', configPath, '--listen', '127.0.0.1:0'], {
    env,
    stdio: ['ignore', 'pipe', logFd],
  });
  closeSync(logFd);

  const url = await new Promise((resolveUrl, reject) => {
    const lines = createInterface({ input: child.stdout });
    const fail = (reason) => {
      clearTimeout(timer);
      if (child.exitCode === null) child.kill('SIGKILL');
      reject(new Error(`gateway did not start: ${reason}; log:\n${readFileSync(logPath, 'utf8')}`));
    };
    const timer = setTimeout(() => fail(`no listening line within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    const onExit = (code) => fail(`exited with ${code} before printing its address`);
    child.once('exit', onExit);
    lines.on('line', (line) => {
      const m = LISTENING.exec(line);
      if (m) {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolveUrl(m[1].replace(/\/$/, ''));
      }
    });
  });
  // Keep draining stdout so the gateway never blocks on a full pipe.
  child.stdout.resume();

  // The line is printed once the socket is bound; /healthz confirms it serves.
  const health = await fetch(`${url}/healthz`);
  if (health.status !== 200) throw new Error(`gateway /healthz answered ${health.status}; log:\n${readFileSync(logPath, 'utf8')}`);

  return new Gateway({ url, process: child, logPath, workdir, agentToken, appKey });
}
