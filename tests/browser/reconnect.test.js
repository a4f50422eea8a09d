// Dropped connections, server restarts and the offline outbox: the page reconnects by
// itself, resumes from the last id it saw, and shows every message exactly once.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Server, WAIT, launchBrowser, openPage, messageTexts, pendingTexts, waitForMessages,
  waitForState, type, startProxy, routeWebSocketsThrough, screenshotPath,
} from './helpers.js';

/** The ids of the delivered messages in the log, as numbers. */
const ids = (page) => page.$$eval('#log li.msg:not(.pending)', (items) => items.map((li) => Number(li.dataset.id)));

describe('reconnecting', () => {
  let browser;
  before(async () => { browser = await launchBrowser(); });
  after(async () => { await browser?.close(); });

  test('5a. connection killed: reconnects by itself, and what was published meanwhile appears once, in order', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const proxy = await startProxy(server.ws);
    t.after(() => proxy.close());
    const context = await browser.newContext();
    await routeWebSocketsThrough(context, proxy.addr);
    const page = await openPage(browser, server, { context });
    await waitForState(page, 'open');
    await server.publish('lobby', 'before the drop');
    await waitForMessages(page, ['before the drop']);

    // The network goes away: cut the page's connections and keep it offline (so it
    // cannot reconnect, nor fall back to HTTP transports).
    await context.setOffline(true);
    proxy.killAll();
    // State and countdown checked in one step: the wait is short (0.5 s at most on
    // the first retry), so reading the text afterwards may already see "connecting…".
    await page.locator('#status[data-state="reconnecting"]', { hasText: /^reconnecting in \d+\.\d s$/ }).waitFor();
    assert.match(await page.textContent('#detail'), /1006/);

    // The room goes on without the page.
    for (const text of ['while away 1', 'while away 2', 'while away 3']) await server.publish('lobby', text);
    await context.setOffline(false);
    await waitForState(page, 'open');
    await server.publish('lobby', 'after the return');
    const expected = ['before the drop', 'while away 1', 'while away 2', 'while away 3', 'after the return'];
    await waitForMessages(page, expected);
    assert.deepEqual(await ids(page), [1, 2, 3, 4, 5]);
    assert.equal(await page.textContent('#transport'), 'WebSocket');
    assert.equal(await page.locator('#log li.gap').count(), 0);
    await context.close();
  });

  test('a gap the server reports (history exceeded) shows as a marker, not as silence', async (t) => {
    const server = await Server.start({ args: ['--history', '3'] });
    t.after(() => server.stop());
    const proxy = await startProxy(server.ws);
    t.after(() => proxy.close());
    const context = await browser.newContext();
    await routeWebSocketsThrough(context, proxy.addr);
    const page = await openPage(browser, server, { context });
    await waitForState(page, 'open');
    await server.publish('lobby', 'm1');
    await waitForMessages(page, ['m1']);
    await context.setOffline(true);
    proxy.killAll();
    await waitForState(page, 'reconnecting');
    for (let i = 2; i <= 7; i++) await server.publish('lobby', `m${i}`); // history keeps m5..m7
    await context.setOffline(false);
    await waitForMessages(page, ['m1', 'm5', 'm6', 'm7']);
    assert.match(await page.locator('#log li.gap').textContent(), /#2–#4/);
    // The marker sits where the missing messages would have been.
    const order = await page.$$eval('#log li.msg, #log li.gap', (items) => items.map((li) => li.classList.contains('gap') ? 'gap' : li.querySelector('.text').textContent));
    assert.deepEqual(order, ['m1', 'gap', 'm5', 'm6', 'm7']);
    await page.screenshot({ path: screenshotPath('gap.png') });
    await context.close();
  });

  test('Disconnect shows closed with code and reason; Connect resumes where it left off', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await openPage(browser, server);
    await waitForState(page, 'open');
    await server.publish('lobby', 'one');
    await waitForMessages(page, ['one']);
    await page.click('#toggle');
    await waitForState(page, 'closed');
    assert.equal(await page.textContent('#status'), 'closed · 1000 closed by you');
    assert.equal(await page.textContent('#toggle'), 'Connect');
    await server.publish('lobby', 'two');
    await page.click('#toggle');
    await waitForState(page, 'open');
    await server.publish('lobby', 'three');
    await waitForMessages(page, ['one', 'two', 'three']);
    await page.context().close();
  });

  test('5b. server restarted on the same port: reconnects, notices the new epoch, keeps the old log', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await openPage(browser, server);
    await waitForState(page, 'open');
    await type(page, 'before the restart');
    await waitForMessages(page, ['before the restart']);

    await server.stop(); // SIGTERM: every client gets close 1001
    await waitForState(page, 'reconnecting');
    // The close frame's code and reason are shown (later failed attempts show 1006).
    await page.locator('#log li.system.close', { hasText: '1001 server shutting down' }).waitFor();
    await server.restart();
    await waitForState(page, 'open');
    await page.locator('#log li.system.epoch').waitFor();

    await server.publish('lobby', 'after the restart');
    await type(page, 'typed after the restart');
    await waitForMessages(page, ['before the restart', 'after the restart', 'typed after the restart']);
    assert.deepEqual(await ids(page), [1, 1, 2]); // ids start again in the new epoch
    const epochs = await page.$$eval('#log li.msg', (items) => items.map((li) => li.dataset.epoch));
    assert.notEqual(epochs[0], epochs[1]);
    assert.equal(epochs[1], epochs[2]);
    await page.context().close();
  });

  test('9. messages typed while the server is down are pending, then appear exactly once on both pages', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const a = await openPage(browser, server);
    const b = await openPage(browser, server);
    await Promise.all([waitForState(a, 'open'), waitForState(b, 'open')]);
    await type(a, 'first, while up');
    await waitForMessages(b, ['first, while up']);

    await server.stop();
    await Promise.all([waitForState(a, 'reconnecting'), waitForState(b, 'reconnecting')]);
    await type(a, 'typed while down 1');
    await type(a, 'typed while down 2');
    await type(b, 'typed on b while down');
    assert.deepEqual(await pendingTexts(a), ['typed while down 1', 'typed while down 2']);
    assert.deepEqual(await pendingTexts(b), ['typed on b while down']);
    assert.match(await a.textContent('#outbox-count'), /2 waiting/);
    await a.screenshot({ path: screenshotPath('pending-while-down.png') });

    await server.restart();
    await Promise.all([waitForState(a, 'open'), waitForState(b, 'open')]);
    const fromA = ['typed while down 1', 'typed while down 2'];
    const keep = (text) => text !== 'first, while up';
    // Each page's own messages keep their order; both pages show the same sequence.
    // Wait for all three on this page: its own are confirmed (no longer pending) as
    // soon as they come back, which can be before the other page's one arrives here.
    const settled = async (page) => {
      await page.waitForFunction(() => document.querySelectorAll('#log li.pending').length === 0
        && document.querySelectorAll('#log li.msg:not(.pending)').length >= 4, null, { timeout: WAIT });
      const texts = (await messageTexts(page)).filter(keep);
      assert.equal(texts.length, 3, JSON.stringify(texts));
      assert.deepEqual(texts.filter((x) => fromA.includes(x)), fromA);
      return texts;
    };
    const [seenA, seenB] = [await settled(a), await settled(b)];
    assert.deepEqual(seenA, seenB);
    // Exactly once in the room too.
    const history = await server.history('lobby');
    assert.deepEqual(history.messages.map((m) => m.data).sort(), [...fromA, 'typed on b while down'].sort());
    assert.equal(await a.textContent('#outbox-count'), '');
    await Promise.all([a.context().close(), b.context().close()]);
  });

  test('the outbox survives a reload and is sent once the WebSocket works again', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const proxy = await startProxy(server.ws);
    t.after(() => proxy.close());
    const context = await browser.newContext();
    await routeWebSocketsThrough(context, proxy.addr);
    // ?transport=ws: no fallback to HTTP, so only the WebSocket can deliver it.
    const page = await openPage(browser, server, { context, path: '?transport=ws' });
    await waitForState(page, 'open');
    proxy.block();
    proxy.killAll();
    await waitForState(page, 'reconnecting');
    await type(page, 'typed offline, then reloaded');
    assert.deepEqual(await pendingTexts(page), ['typed offline, then reloaded']);

    await page.reload();
    await page.locator('#log li.pending').waitFor();
    assert.deepEqual(await pendingTexts(page), ['typed offline, then reloaded']);
    assert.equal(await server.historyCount('lobby'), 0);

    proxy.unblock();
    await waitForState(page, 'open', 2 * WAIT); // after the backoff wait
    await waitForMessages(page, ['typed offline, then reloaded']);
    assert.equal(await page.locator('#log li.pending').count(), 0);
    assert.equal(await server.historyCount('lobby'), 1);
    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('threadcast.outbox.v1')));
    assert.deepEqual(stored, []);
    await context.close();
  });

  test('an outbox entry the server already has (its ack was lost) is not shown or published twice', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    // The server got the message, but the page never heard back before it was closed.
    const first = await server.publish('lobby', 'sent, ack lost', 'cAckLost');
    assert.equal(first.duplicate, false);
    const context = await browser.newContext();
    await context.addInitScript(() => {
      if (!localStorage.getItem('threadcast.outbox.v1')) {
        localStorage.setItem('threadcast.outbox.v1', JSON.stringify([
          { room: 'lobby', cid: 'cAckLost', created: Date.now() - 60_000, text: 'sent, ack lost' },
          { room: 'lobby', cid: 'cNeverSent', created: Date.now() - 30_000, text: 'never sent' },
        ]));
      }
    });
    const page = await openPage(browser, server, { context });
    await waitForState(page, 'open');
    await waitForMessages(page, ['sent, ack lost', 'never sent']);
    await page.waitForFunction(() => document.querySelectorAll('#log li.pending').length === 0);
    await page.waitForFunction(() => localStorage.getItem('threadcast.outbox.v1') === '[]');
    const history = await server.history('lobby');
    assert.deepEqual(history.messages.map((m) => [m.id, m.cid, m.data]), [[1, 'cAckLost', 'sent, ack lost'], [2, 'cNeverSent', 'never sent']]);
    await context.close();
  });
});
