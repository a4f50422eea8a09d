// The optional features in a real browser: the page over https:// talking wss://
// (--features tls), and two instances sharing a room through Redis (--features redis).
// They need a binary built with both features: THREADCAST_FEATURES_BIN (tests/run-all.sh
// sets it). Without it these tests are skipped, except under CI, where that fails.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  Server, WAIT, launchBrowser, openPage, waitForMessages, waitForState, type,
} from './helpers.js';

const BINARY = process.env.THREADCAST_FEATURES_BIN;
if (!BINARY && process.env.CI) throw new Error('THREADCAST_FEATURES_BIN is not set (tests/run-all.sh sets it)');
const skip = BINARY ? false : 'THREADCAST_FEATURES_BIN not set: build with --features "redis tls" and point it there';

/** Runs a shell pipeline, failing loudly. */
function sh(script, cwd) {
  const run = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd, encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`${script}\n${run.stderr}`);
  return run.stdout.trim();
}

/** A throwaway self-signed certificate for 127.0.0.1, and the base64 SHA-256 of its public
 *  key: Chromium is told to trust exactly that key (--ignore-certificate-errors-spki-list
 *  pins it), so the page is really checked against it and nothing else is accepted. */
function certificate(dir) {
  sh(`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
      -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
      -keyout key.pem -out cert.pem 2>/dev/null`, dir);
  const spki = sh(`openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der \
      | openssl dgst -sha256 -binary | base64`, dir);
  return { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem'), spki };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    }).on('error', reject);
  });
}

/** redis-server on a free loopback port, no persistence; resolves once it is ready. */
async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '',
    '--appendonly', 'no', '--logfile', ''], { stdio: ['ignore', 'pipe', 'ignore'] });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('redis-server did not start')), WAIT);
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (out.includes('Ready to accept connections')) { clearTimeout(timer); resolve(); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`redis-server exited (${code})`)); });
  });
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') };
}

async function linked(server) {
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline) {
    if ((await (await fetch(`${server.url}healthz`)).text()).trim() === 'ok') return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error('the Redis link never came up');
}

describe('optional features in a real browser', { skip }, () => {
  let dir;
  let tls;
  let browser;
  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'threadcast-browser-tls-'));
    tls = certificate(dir);
    browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${tls.spki}`]);
  });
  after(async () => {
    await browser?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('TLS: the page loads over https:// and its rooms and echo run over wss://', async (t) => {
    const server = await Server.start({ binary: BINARY, args: ['--tls-cert', tls.cert, '--tls-key', tls.key] });
    t.after(() => server.stop());
    assert.match(server.url, /^https:\/\//);
    const page = await openPage(browser, server);
    await waitForState(page, 'open');
    await page.locator('#echo-status[data-state="open"]').waitFor();
    await type(page, 'sealed');
    await waitForMessages(page, ['sealed']);
    assert.ok(page.seen.websockets.length > 0, 'the page opened WebSockets');
    for (const url of page.seen.websockets) assert.match(url, /^wss:\/\//);
    // One port: the sockets go to the very host and port the page came from.
    for (const url of page.seen.websockets) assert.ok(url.startsWith(`wss://${server.http}/`), url);
    for (const url of page.seen.requests) assert.match(url, /^https:\/\//);
    assert.deepEqual(page.seen.errors, []);
    await page.context().close();
  });

  test('Redis: a page on one instance sees what a page on another instance sends', async (t) => {
    const redis = await startRedis();
    t.after(() => redis.stop());
    const args = ['--redis', redis.url, '--no-demo-feed'];
    const a = await Server.start({ binary: BINARY, args });
    const b = await Server.start({ binary: BINARY, args });
    t.after(() => Promise.all([a.stop(), b.stop()]));
    await Promise.all([linked(a), linked(b)]);
    const onA = await openPage(browser, a);
    const onB = await openPage(browser, b);
    await Promise.all([waitForState(onA, 'open'), waitForState(onB, 'open')]);
    await type(onA, 'from instance A');
    await waitForMessages(onB, ['from instance A']);
    await type(onB, 'and back from B');
    await waitForMessages(onA, ['from instance A', 'and back from B']);
    // Same ids on both instances.
    const ids = (page) => page.$$eval('#log li.msg', (items) => items.map((li) => li.dataset.id));
    assert.deepEqual(await ids(onA), await ids(onB));
    assert.deepEqual([...onA.seen.errors, ...onB.seen.errors], []);
    await onA.context().close();
    await onB.context().close();
  });
});
