// Room histories on disk (issue 16): with --data-dir, a page open across a server
// restart resumes in the same epoch: no "history started over" notice, no gap, no
// message twice, and what was typed while the server was down is delivered once.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  Server, launchBrowser, openPage, messageTexts, pendingTexts, waitForMessages,
  waitForState, type, screenshotPath,
} from './helpers.js';

/** The delivered messages in the log: [id, epoch] each. */
const idsAndEpochs = (page) => page.$$eval('#log li.msg:not(.pending)', (items) => items.map((li) => [Number(li.dataset.id), li.dataset.epoch]));

/** A threadcast keeping its rooms in a fresh temporary directory, removed afterwards. */
async function durableServer(t) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'threadcast-browser-data-'));
  const server = await Server.start({ args: ['--data-dir', dir] });
  t.after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return server;
}

describe('histories on disk (--data-dir)', () => {
  let browser;
  before(async () => { browser = await launchBrowser(); });
  after(async () => { await browser?.close(); });

  const cases = [
    // [transport (null: the page's default, WebSocket), how the server goes down, label shown]
    [null, 'SIGTERM', 'WebSocket'],
    [null, 'SIGKILL', 'WebSocket'],
    ['sse', 'SIGTERM', 'SSE + POST'],
    ['poll', 'SIGKILL', 'long polling + POST'],
  ];
  for (const [transport, signal, label] of cases) {
    test(`16. restart with --data-dir over ${label} (${signal}): same epoch, no gap, no duplicate, the outbox delivered once`, async (t) => {
      const server = await durableServer(t);
      const page = await openPage(browser, server, { path: transport ? `?transport=${transport}` : '' });
      await waitForState(page, 'open');
      assert.equal(await page.textContent('#transport'), label);

      // Before: one message from the page, two over HTTP. Each is acknowledged (on
      // disk: --fsync batch acknowledges after the fsync) before the server goes down.
      await type(page, 'typed before');
      await waitForMessages(page, ['typed before']);
      await server.publish('lobby', 'published before 1');
      await server.publish('lobby', 'published before 2');
      const before = ['typed before', 'published before 1', 'published before 2'];
      await waitForMessages(page, before);
      await page.waitForFunction(() => document.querySelectorAll('#log li.pending').length === 0);
      const [[, epoch]] = await idsAndEpochs(page);
      assert.ok(epoch, 'messages carry their epoch');

      // Down: gracefully (SIGTERM: clients get 1001) or not at all (SIGKILL: 1006).
      if (signal === 'SIGKILL') await server.kill();
      else await server.stop();
      await page.locator('#status:not([data-state="open"])').waitFor();
      // The page's outbox holds what is typed now.
      await type(page, 'typed while down');
      await page.locator('#log li.pending .text', { hasText: 'typed while down' }).waitFor();
      assert.deepEqual(await pendingTexts(page), ['typed while down']);
      assert.equal(await server.historyCount('lobby').catch(() => 'down'), 'down');

      // Up again on the same port and the same directory.
      await server.restart();
      await waitForState(page, 'open');
      // It resumed after the last id it saw, in the same epoch.
      await page.locator('#log li.system', { hasText: `resuming after #${before.length}` }).waitFor();
      await waitForMessages(page, [...before, 'typed while down']);
      await page.waitForFunction(() => document.querySelectorAll('#log li.pending').length === 0);
      await server.publish('lobby', 'published after');
      const all = [...before, 'typed while down', 'published after'];
      await waitForMessages(page, all);

      // Each message once, ids 1..5 without a hole, one epoch: the one from before.
      assert.deepEqual(await idsAndEpochs(page), all.map((_, i) => [i + 1, epoch]));
      assert.equal(await page.locator('#log li.system.epoch').count(), 0, 'no "history started over" notice');
      assert.doesNotMatch(await page.textContent('#log'), /started over/);
      assert.equal(await page.locator('#log li.gap').count(), 0, 'no gap marker');
      assert.equal(await page.textContent('#outbox-count'), '');
      assert.deepEqual(await page.evaluate(() => JSON.parse(localStorage.getItem('threadcast.outbox.v1'))), []);
      assert.equal(await page.textContent('#transport'), label);
      // The room holds each message once, too.
      const history = await server.history('lobby');
      assert.equal(history.epoch, epoch);
      assert.deepEqual(history.messages.map((m) => [m.id, m.data]), all.map((text, i) => [i + 1, text]));

      // A page opened now gets the whole history from disk, once.
      const late = await openPage(browser, server, { path: transport ? `?transport=${transport}` : '' });
      await waitForState(late, 'open');
      await waitForMessages(late, all);
      assert.deepEqual(await idsAndEpochs(late), all.map((_, i) => [i + 1, epoch]));

      if (signal === 'SIGKILL' && !transport) {
        await page.screenshot({ path: screenshotPath('restart-data-dir.png') });
      }
      assert.deepEqual(page.seen.errors.filter((e) => !/ERR_CONNECTION_REFUSED|net::|WebSocket connection/.test(e)), []);
      assert.deepEqual(page.seen.dialogs, []);
      await Promise.all([page.context().close(), late.context().close()]);
    });
  }
});
