// Runs the web SDK examples' own company site (examples/web-sdk/server.mjs)
// on a free port, against a started demo, and waits until it answers.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { E2E_ROOT, freePort } from './demo.js';

export const EXAMPLES = resolve(E2E_ROOT, '..', 'examples', 'web-sdk');

/** The integrity value docs/web-sdk.md gives for <script integrity>. */
export function documentedIntegrity() {
  const docs = readFileSync(resolve(E2E_ROOT, '..', 'docs', 'web-sdk.md'), 'utf8');
  const m = docs.match(/integrity="(sha384-[A-Za-z0-9+/=]+)"/);
  if (!m) throw new Error('docs/web-sdk.md gives no integrity value');
  return m[1];
}

export async function startSite(demo, port) {
  port = port || (await freePort());
  const appKey = readFileSync(join(demo.dir, 'secrets', 'web_app_key'), 'utf8').trim();
  const child = spawn(process.execPath, [join(EXAMPLES, 'server.mjs')], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      ...process.env,
      PORT: String(port),
      GATEWAY_URL: demo.gatewayUrl,
      COMPANY_URL: demo.backendUrl,
      APP_KEY: appKey,
      SDK_INTEGRITY: documentedIntegrity(),
    },
  });
  await new Promise((ok, fail) => {
    child.once('exit', (code) => fail(new Error(`the example site exited (${code})`)));
    child.stdout.on('data', (d) => String(d).includes('listening on') && ok());
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    async freshTokens() {
      return (await (await fetch(`${url}/stats`)).json()).freshTokens;
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}
