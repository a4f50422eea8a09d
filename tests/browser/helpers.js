// Shared helpers for the browser tests: start a real threadcast on an ephemeral port
// (one port serves the page, the HTTP endpoints and the WebSockets), launch Debian's
// Chromium through playwright-core, and a TCP proxy that lets a test cut a page's
// WebSocket connections without touching the server.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SCREENSHOTS = path.join(REPO, 'target', 'screenshots');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

/** Every wait in these tests is bounded by this (milliseconds): generous, because CI
 *  machines have 2 cores shared by Chromium, the server and the test runner. */
export const WAIT = 20_000;

/* The server ------------------------------------------------------------------------ */

let builtBinary = null;

/** Servers still running when this test process exits are killed with it. */
const running = new Set();
process.on('exit', () => { for (const child of running) child.kill('SIGKILL'); });

/** THREADCAST_BIN if set; else the newest of target/{release,debug}/threadcast (under
 *  CARGO_TARGET_DIR or the repository's target/); else `cargo build` once. */
export function threadcastBinary() {
  if (process.env.THREADCAST_BIN) return process.env.THREADCAST_BIN;
  if (builtBinary) return builtBinary;
  const targets = [process.env.CARGO_TARGET_DIR, path.join(REPO, 'target')].filter(Boolean);
  const candidates = targets
    .flatMap((dir) => ['release', 'debug'].map((profile) => path.join(dir, profile, 'threadcast')))
    .filter((file) => existsSync(file))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (candidates.length === 0) {
    const build = spawnSync('cargo', ['build', '--quiet'], { cwd: REPO, stdio: 'inherit' });
    if (build.status !== 0) throw new Error('cargo build failed');
    return threadcastBinary();
  }
  builtBinary = candidates[0];
  return builtBinary;
}

export class Server {
  /** Starts threadcast on one port; `http` defaults to port 0 (ephemeral). No `--ws`:
   *  the page, the HTTP endpoints and the WebSockets all share that port. */
  static async start({ args = [], http = '127.0.0.1:0', publicDir = path.join(REPO, 'public'), binary } = {}) {
    const server = new Server(args, publicDir);
    server.binary = binary;
    await server.spawn(http);
    return server;
  }

  constructor(args, publicDir) {
    this.args = args;
    this.publicDir = publicDir;
    this.log = '';
  }

  async spawn(httpAddr) {
    const child = spawn(this.binary || threadcastBinary(), [
      '--http', httpAddr, '--public', this.publicDir, ...this.args,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    running.add(child);
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => { running.delete(child); resolve({ code, signal }); }));
    let stderr = '';
    const addresses = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('threadcast did not print its listening line:\n' + stderr)), WAIT);
      child.stderr.on('data', (chunk) => {
        stderr += chunk;
        this.log += chunk;
        const match = /listening http=(\S+) ws=(\S+)/.exec(stderr);
        if (match) { clearTimeout(timer); resolve({ http: match[1], ws: match[2] }); }
      });
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`threadcast exited (${code}):\n${stderr}`)); });
    });
    // One port: the listening line names the same address twice.
    if (addresses.ws !== addresses.http) {
      throw new Error(`expected one port, got http=${addresses.http} ws=${addresses.ws}:\n${stderr}`);
    }
    this.http = addresses.http;
    this.ws = addresses.ws; // where the WebSockets are: the same address
    this.url = `${this.args.includes('--tls-cert') ? 'https' : 'http'}://${this.http}/`;
  }

  /** SIGTERM: the server closes its clients with 1001 and exits. */
  async stop() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL: no goodbye to anyone (clients see 1006), nothing flushed at exit. */
  async kill() {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** Starts a new process on the same port with the same arguments (a new epoch and
   *  an empty history, unless they include `--data-dir`). */
  async restart() {
    await this.stop();
    for (let attempt = 1; ; attempt++) {
      try {
        await this.spawn(this.http);
        return;
      } catch (error) {
        if (attempt >= 20 || !/in use/i.test(String(error))) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100)); // port not free yet
      }
    }
  }

  /** POST /publish/<room>; returns the JSON answer. */
  async publish(room, body, cid) {
    const response = await fetch(`${this.url}publish/${room}${cid ? '?cid=' + cid : ''}`, { method: 'POST', body });
    if (response.status !== 202) throw new Error(`publish: HTTP ${response.status} ${await response.text()}`);
    return response.json();
  }

  /** How many messages the room's history holds. /stats lists rooms only when a token
   *  is set (a room's name is all it takes to read it), so this asks the room itself:
   *  GET /events/<room>?since=0 starts with the catch-up (welcome with `last_id`, then
   *  every message in history up to it), read until the message with that id. (For
   *  that moment the stream is a member of the room, as a page would be.) */
  async historyCount(room) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), WAIT);
    try {
      const response = await fetch(`${this.url}events/${room}?since=0`, { signal: abort.signal });
      if (response.status !== 200) throw new Error(`events: HTTP ${response.status} ${await response.text()}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      let lastId = null;
      let count = 0;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the event stream ended before the catch-up did:\n${text}`);
        text += value;
        let end;
        while ((end = text.indexOf('\n\n')) >= 0) {
          const event = text.slice(0, end);
          text = text.slice(end + 2);
          const field = (name) => event.split('\n').find((line) => line.startsWith(name + ': '))?.slice(name.length + 2);
          if (field('event') === 'welcome') {
            lastId = JSON.parse(field('data')).last_id;
            if (lastId === 0) return 0;
          } else if (lastId !== null && ['message', 'binary'].includes(field('event'))) {
            count += 1;
            if (Number(field('id').split(':').pop()) >= lastId) return count; // id: <epoch>:<id>
          }
        }
      }
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }

  /** The room's history as the server holds it (GET /poll/<room>?since=0; that waits
   *  for a message when the history is empty, so check historyCount first). */
  async history(room) {
    const response = await fetch(`${this.url}poll/${room}?since=0`, { signal: AbortSignal.timeout(WAIT) });
    return response.json();
  }
}

/* The browser ----------------------------------------------------------------------- */

/** Debian's Chromium, headless. Playwright gives every launch a fresh profile
 *  (--user-data-dir in a new mkdtemp folder, deleted on close); it refuses one in args. */
export async function launchBrowser(extraArgs = []) {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: apt-get install -y chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs,
    ],
  });
}

/**
 * Opens the page in a new browser context (its own localStorage: a separate user).
 * Collects console errors, page errors and dialogs, and every URL the page asks for.
 */
export async function openPage(browser, server, { path: pagePath = '', viewport, context: existingContext } = {}) {
  const context = existingContext || await browser.newContext({ viewport: viewport || { width: 1280, height: 800 } });
  context.setDefaultTimeout(WAIT);
  context.setDefaultNavigationTimeout(2 * WAIT);
  const page = await context.newPage();
  const seen = { errors: [], dialogs: [], requests: [], websockets: [] };
  page.on('console', (message) => { if (message.type() === 'error') seen.errors.push(message.text()); });
  page.on('pageerror', (error) => seen.errors.push(String(error)));
  page.on('dialog', (dialog) => { seen.dialogs.push(dialog.message()); dialog.dismiss().catch(() => {}); });
  page.on('request', (request) => seen.requests.push(request.url()));
  page.on('websocket', (socket) => seen.websockets.push(socket.url()));
  page.seen = seen;
  const unfinished = new Set();
  page.on('request', (request) => unfinished.add(request));
  page.on('requestfinished', (request) => unfinished.delete(request));
  page.on('requestfailed', (request) => unfinished.delete(request));
  try {
    await page.goto(server.url + pagePath);
  } catch (error) {
    // Say which requests the server never answered (see the report on tiny_http's
    // connection pool: a keep-alive connection can wait for a free thread).
    error.message += `\nunanswered requests: ${[...unfinished].map((r) => r.url()).join(', ')}`;
    throw error;
  }
  return page;
}

/* Reading the page -------------------------------------------------------------------- */

/** Texts of the delivered (not pending) text messages in the log, in order. */
export function messageTexts(page) {
  return page.$$eval('#log li.msg:not(.pending) .text', (nodes) => nodes.map((n) => n.textContent));
}

export function pendingTexts(page) {
  return page.$$eval('#log li.pending .text', (nodes) => nodes.map((n) => n.textContent));
}

/** Waits until the log's delivered texts, filtered by `keep`, equal `expected`. */
export async function waitForMessages(page, expected, keep = () => true) {
  const deadline = Date.now() + WAIT;
  let last;
  while (Date.now() < deadline) {
    last = (await messageTexts(page)).filter(keep);
    if (JSON.stringify(last) === JSON.stringify(expected)) return last;
    await page.waitForFunction(
      (n) => document.querySelectorAll('#log li.msg:not(.pending)').length !== n,
      (await page.$$('#log li.msg:not(.pending)')).length,
      { timeout: Math.max(1, Math.min(1_000, deadline - Date.now())) },
    ).catch(() => {});
  }
  throw new Error(`log never became ${JSON.stringify(expected)}; last seen ${JSON.stringify(last)}`);
}

export async function waitForState(page, state, timeout = WAIT) {
  await page.locator(`#status[data-state="${state}"]`).waitFor({ timeout });
}

export async function type(page, text) {
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
}

export function screenshotPath(name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return path.join(SCREENSHOTS, name);
}

/* A TCP proxy in front of the server's port -------------------------------------------- */

/**
 * Forwards 127.0.0.1:<port> to the server's port (tests point only the page's
 * WebSockets at it, with routeWebSocketsThrough). `killAll()` cuts every
 * open connection (the page sees close code 1006, as on a network failure); `block()`
 * makes new connections fail at once; `unblock()` lets them through again.
 */
export async function startProxy(targetAddr) {
  const [host, port] = [targetAddr.slice(0, targetAddr.lastIndexOf(':')), Number(targetAddr.slice(targetAddr.lastIndexOf(':') + 1))];
  const pairs = new Set();
  let blocked = false;
  const listener = net.createServer((client) => {
    if (blocked) { client.destroy(); return; }
    const upstream = net.connect(port, host);
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => { client.destroy(); upstream.destroy(); pairs.delete(pair); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => listener.listen(0, '127.0.0.1', resolve));
  return {
    addr: `127.0.0.1:${listener.address().port}`,
    get open() { return pairs.size; },
    killAll() { for (const { client, upstream } of pairs) { client.destroy(); upstream.destroy(); } pairs.clear(); },
    block() { blocked = true; },
    unblock() { blocked = false; },
    close() { this.killAll(); return new Promise((resolve) => listener.close(resolve)); },
  };
}

/** Makes the page's /config.json point its WebSockets at `wsAddr` (e.g. a proxy). */
export async function routeWebSocketsThrough(context, wsAddr) {
  await context.route('**/config.json', async (route) => {
    const response = await route.fetch();
    const config = await response.json();
    config.ws_url = `ws://${wsAddr}`;
    await route.fulfill({ response, json: config });
  });
}
