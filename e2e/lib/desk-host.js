// The sample host page: a third-party desk (e2e/desk-host/) that frames the
// deskbridge customer card in its sidebar (index.html: by the postMessage
// contract; element.html: as the gateway's <deskbridge-card>). Served here,
// by the test harness, never by the gateway: its own origin is the point.

import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { E2E_ROOT } from './demo.js';

const FILES = {
  '/': ['index.html', 'text/html; charset=utf-8'],
  '/desk.js': ['desk.js', 'text/javascript; charset=utf-8'],
  '/desk.css': ['desk.css', 'text/css; charset=utf-8'],
  '/intruder.html': ['intruder.html', 'text/html; charset=utf-8'],
  '/intruder.js': ['intruder.js', 'text/javascript; charset=utf-8'],
  '/element.html': ['element.html', 'text/html; charset=utf-8'],
  '/element.js': ['element.js', 'text/javascript; charset=utf-8'],
};

/**
 * Serves the desk on 127.0.0.1:`port`; `/config.json` is `config` (what the
 * desk's backend would hand its page: the gateway, the agent's token, tickets).
 */
export function startDeskHost(port, config) {
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://desk').pathname;
    if (path === '/config.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      return res.end(JSON.stringify(config));
    }
    const file = FILES[path];
    if (!file) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('not found');
    }
    res.writeHead(200, { 'content-type': file[1], 'cache-control': 'no-store' });
    res.end(readFileSync(join(E2E_ROOT, 'desk-host', file[0])));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () =>
      resolve({
        origin: `http://127.0.0.1:${port}`,
        close: () => new Promise((r) => server.close(r)),
      }),
    );
  });
}
