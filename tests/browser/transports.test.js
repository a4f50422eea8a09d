// The HTTP transports: forced with ?transport=sse|poll, and chosen by the page itself
// when WebSockets are blocked (then it goes back to WebSocket once that works again).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Server, launchBrowser, openPage, waitForMessages, waitForState, type, startProxy,
  routeWebSocketsThrough,
} from './helpers.js';

describe('transports', () => {
  let browser;
  before(async () => { browser = await launchBrowser(); });
  after(async () => { await browser?.close(); });

  for (const [transport, label] of [['sse', 'SSE + POST'], ['poll', 'long polling + POST']]) {
    test(`6. forced ${transport}: receives and sends, text and binary`, async (t) => {
      const server = await Server.start();
      t.after(() => server.stop());
      const forced = await openPage(browser, server, { path: `?transport=${transport}` });
      const ws = await openPage(browser, server);
      await Promise.all([waitForState(forced, 'open'), waitForState(ws, 'open')]);
      assert.equal(await forced.textContent('#transport'), label);

      await type(forced, `sent over ${transport}`);
      await waitForMessages(ws, [`sent over ${transport}`]);
      await type(ws, 'sent over WebSocket');
      // Different senders race at the server: wait for each before the next.
      await waitForMessages(ws, [`sent over ${transport}`, 'sent over WebSocket']);
      await server.publish('lobby', 'published over HTTP: ünïcödé ✓');
      const expected = [`sent over ${transport}`, 'sent over WebSocket', 'published over HTTP: ünïcödé ✓'];
      await waitForMessages(forced, expected);
      await waitForMessages(ws, expected);

      // Binary both ways (base64 in the SSE/poll JSON, raw bytes on POST).
      await forced.setInputFiles('#file', { name: 'b.bin', mimeType: 'application/octet-stream', buffer: Buffer.from([0xff, 0x00, 0x80, 0x0a]) });
      await ws.locator('#log li.msg.binary .hex', { hasText: 'ff 00 80 0a' }).waitFor();
      await server.publish('lobby', new Uint8Array([0xc3, 0x28, 0x0a, 0x00]));
      await forced.locator('#log li.msg.binary:not(.pending) .hex', { hasText: 'c3 28 0a 00' }).waitFor();
      assert.equal(await forced.locator('#log li.pending').count(), 0);
      // The feed panel uses the same transport.
      await forced.locator('#feed-log li').first().waitFor();
      assert.match(await forced.textContent('#feed-status'), new RegExp(label.replace('+', '\\+')));

      const roomSockets = forced.seen.websockets.filter((url) => url.includes('/ws/'));
      assert.deepEqual(roomSockets, [], 'no WebSocket to a room');
      assert.deepEqual(forced.seen.errors, []);
      await Promise.all([forced.context().close(), ws.context().close()]);
    });
  }

  test('WebSockets blocked: falls back to SSE + POST, then back to WebSocket when it works', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const proxy = await startProxy(server.ws);
    t.after(() => proxy.close());
    proxy.block(); // like a proxy that does not pass WebSocket upgrades
    const context = await browser.newContext();
    await routeWebSocketsThrough(context, proxy.addr);
    const page = await openPage(browser, server, { context, path: '?retry_ws=1' });
    await page.locator('#transport', { hasText: 'SSE + POST' }).waitFor();
    await waitForState(page, 'open');
    await type(page, 'sent while WebSockets are blocked');
    await waitForMessages(page, ['sent while WebSockets are blocked']);
    await server.publish('lobby', 'received over SSE');
    await waitForMessages(page, ['sent while WebSockets are blocked', 'received over SSE']);
    assert.match(await page.textContent('#log'), /falling back to SSE \+ POST/);

    proxy.unblock();
    await page.locator('#transport', { hasText: 'WebSocket' }).waitFor();
    await waitForState(page, 'open');
    await server.publish('lobby', 'received over WebSocket again');
    await type(page, 'sent over WebSocket again');
    // Resumed across the switch: nothing lost, nothing twice.
    await waitForMessages(page, ['sent while WebSockets are blocked', 'received over SSE', 'received over WebSocket again', 'sent over WebSocket again']);
    assert.ok(proxy.open > 0, 'the room connection goes through the WebSocket port again');
    await context.close();
  });

  test('with --token: the page reads #token= and uses it on every transport', async (t) => {
    const server = await Server.start({ args: ['--token', 's3cret'] });
    t.after(() => server.stop());
    const without = await openPage(browser, server);
    await waitForState(without, 'closed');
    assert.match(await without.textContent('#log'), /#token=/);
    await without.context().close();

    const ws = await openPage(browser, server, { path: '#token=s3cret' });
    const sse = await openPage(browser, server, { path: '?transport=sse#token=s3cret' });
    const poll = await openPage(browser, server, { path: '?transport=poll#token=s3cret' });
    for (const page of [ws, sse, poll]) await waitForState(page, 'open');
    const sent = [];
    for (const [page, text] of [[ws, 'over ws'], [sse, 'over sse'], [poll, 'over poll']]) {
      await type(page, text);
      sent.push(text);
      await waitForMessages(page, sent);
    }
    for (const page of [ws, sse, poll]) {
      await waitForMessages(page, sent);
      await page.context().close();
    }
  });

  test('with --auth first-message: the token goes as the first message, never in the URL', async (t) => {
    const server = await Server.start({ args: ['--token', 's3cret', '--auth', 'first-message'] });
    t.after(() => server.stop());
    const page = await openPage(browser, server, { path: '#token=s3cret' });
    const urls = [];
    page.on('websocket', (ws) => urls.push(ws.url()));
    await waitForState(page, 'open');
    await type(page, 'authenticated by first message');
    await waitForMessages(page, ['authenticated by first message']);
    await page.reload();
    await waitForState(page, 'open');
    assert.ok(urls.length > 0, 'the page opened WebSockets');
    for (const url of urls) assert.ok(!url.includes('token='), `token in ${url}`);
    await page.context().close();
  });
});
