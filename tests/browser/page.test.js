// The page in a real browser: connecting, rooms, echo, binary, XSS, the live feed,
// and the screenshots a person looks at (target/screenshots/).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Server, WAIT, launchBrowser, openPage, messageTexts, waitForMessages, waitForState, type,
  screenshotPath,
} from './helpers.js';

describe('the bundled page', () => {
  let browser;
  before(async () => { browser = await launchBrowser(); });
  after(async () => { await browser?.close(); });

  test('1. loads without console errors, connects, and shows open over WebSocket', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await openPage(browser, server);
    await waitForState(page, 'open');
    assert.equal(await page.textContent('#status'), 'open');
    assert.equal(await page.textContent('#transport'), 'WebSocket');
    await page.locator('#members[data-count="1"]').waitFor();
    await page.locator('#echo-status[data-state="open"]').waitFor();
    await page.locator('#feed-status[data-state="open"]').waitFor();
    assert.match(await page.textContent('#log'), /Joined #lobby over WebSocket/);
    assert.deepEqual(page.seen.errors, []);
    // Nothing but this server: no fonts, CDNs or other hosts.
    const own = [`http://${server.http}/`, `ws://${server.ws}/`];
    const foreign = [...page.seen.requests, ...page.seen.websockets].filter((url) => !own.some((o) => url.startsWith(o)));
    assert.deepEqual(foreign, []);
    await page.context().close();
  });

  test('the page built into the binary (no public folder) loads every file and connects', async (t) => {
    const server = await Server.start({ publicDir: '/nonexistent/threadcast-public' });
    t.after(() => server.stop());
    const page = await openPage(browser, server);
    await waitForState(page, 'open');
    await type(page, 'bundled');
    await waitForMessages(page, ['bundled']);
    assert.deepEqual(page.seen.errors, []);
    await page.context().close();
  });

  test('2. two pages in one room both see a message; a page in another room sees nothing', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const a = await openPage(browser, server);
    const b = await openPage(browser, server);
    const other = await openPage(browser, server, { path: '#room=other' });
    await Promise.all([a, b, other].map((page) => waitForState(page, 'open')));
    assert.equal(await other.textContent('#room-name'), 'other');
    await a.locator('#members[data-count="2"]').waitFor();

    const expected = ['Hello, class!', 'Grüße from the second page!', 'Both pages see every message, in the same order.'];
    // Two senders race at the server: wait for each message before the next is typed.
    await type(a, expected[0]);
    await waitForMessages(b, expected.slice(0, 1));
    await type(b, expected[1]);
    await waitForMessages(a, expected.slice(0, 2));
    await type(a, expected[2]);
    await waitForMessages(a, expected);
    await waitForMessages(b, expected);
    // Sender-side timestamps and ids come from the server: the same on both pages.
    const meta = (page) => page.$$eval('#log li.msg', (items) => items.map((li) => [li.dataset.id, li.querySelector('time').dateTime]));
    assert.deepEqual(await meta(a), await meta(b));
    assert.deepEqual(await a.$$eval('#log li.msg.mine', (items) => items.length), 2);

    // A binary message too, so the screenshot shows one.
    await a.setInputFiles('#file', { name: 'hello.bin', mimeType: 'application/octet-stream', buffer: Buffer.from('threadcast\n\x00\x01\x02\xff', 'latin1') });
    await a.locator('#log li.msg.binary:not(.pending) .hex').waitFor();
    await a.fill('#echo-input', 'ping');
    await a.press('#echo-input', 'Enter');
    await a.locator('#echo-log .rtt').first().waitFor();
    await a.locator('#feed-log li').nth(2).waitFor();
    await a.evaluate(() => document.activeElement.blur());
    await a.screenshot({ path: screenshotPath('two-pages.png') });

    assert.deepEqual(await messageTexts(other), []);
    assert.equal(await other.locator('#log li.msg').count(), 0);
    for (const page of [a, b, other]) {
      assert.deepEqual(page.seen.errors, []);
      await page.context().close();
    }
  });

  test('switching rooms from the form and from the URL hash', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await openPage(browser, server);
    const lobby = await openPage(browser, server);
    await waitForState(page, 'open');
    await waitForState(lobby, 'open');
    await type(page, 'in the lobby');
    await waitForMessages(lobby, ['in the lobby']);

    await page.fill('#room', 'ops');
    await page.press('#room', 'Enter');
    await page.locator('#room-name', { hasText: 'ops' }).waitFor();
    assert.match(page.url(), /#room=ops$/);
    await waitForState(page, 'open');
    await page.locator('#log li.system', { hasText: 'Joined #ops' }).waitFor();
    assert.deepEqual(await messageTexts(page), []);
    await type(page, 'in ops');
    await waitForMessages(page, ['in ops']);
    assert.equal(await server.historyCount('ops'), 1);

    await page.evaluate(() => { location.hash = 'room=lobby'; });
    await page.locator('#room-name', { hasText: 'lobby' }).waitFor();
    await waitForMessages(page, ['in the lobby']); // the room's history, replayed
    assert.deepEqual(await messageTexts(lobby), ['in the lobby']);
    await Promise.all([page.context().close(), lobby.context().close()]);
  });

  test('a narrow 375 px screen: one column, nothing wider than the screen', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await openPage(browser, server, { viewport: { width: 375, height: 812 } });
    await waitForState(page, 'open');
    await server.publish('lobby', 'Messages wrap on a phone-sized screen instead of running off the edge of it.');
    await type(page, 'Hello from a phone');
    await page.click('#random-bytes');
    await waitForMessages(page, ['Messages wrap on a phone-sized screen instead of running off the edge of it.', 'Hello from a phone']);
    await page.locator('#log li.msg.binary:not(.pending)').waitFor();
    await page.locator('#feed-log li').first().waitFor();
    const widest = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(widest <= 375, `page is ${widest}px wide`);
    // The room comes first, the side panels below it.
    const roomBox = await page.locator('section.room').boundingBox();
    const echoBox = await page.locator('section.echo').boundingBox();
    assert.ok(echoBox.y > roomBox.y + roomBox.height - 1, 'echo panel is below the room');
    await page.evaluate(() => { document.activeElement.blur(); window.scrollTo(0, 0); });
    await page.mouse.move(0, 0);
    await page.screenshot({ path: screenshotPath('narrow-375.png') });
    await page.screenshot({ path: screenshotPath('narrow-375-full.png'), fullPage: true });
    assert.deepEqual(page.seen.errors, []);
    await page.context().close();
  });

  test('3. the echo panel shows a round-trip time', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await openPage(browser, server);
    await page.locator('#echo-status[data-state="open"]').waitFor();
    await page.fill('#echo-input', 'hello echo');
    await page.press('#echo-input', 'Enter');
    const first = page.locator('#echo-log li').first();
    await first.waitFor();
    assert.equal(await first.locator('.text').textContent(), 'hello echo');
    assert.match(await first.locator('.rtt').textContent(), /^\d+(\.\d+)? ms$/);
    await page.click('#echo-burst');
    await page.locator('#echo-log li').nth(10).waitFor();
    assert.deepEqual(
      await page.$$eval('#echo-log li .text', (nodes) => nodes.map((n) => n.textContent)),
      ['hello echo', ...Array.from({ length: 10 }, (_, i) => `ping ${i + 1}`)],
    );
    await page.context().close();
  });

  test('4. a binary message shows its size and hex on the other page', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const a = await openPage(browser, server);
    const b = await openPage(browser, server);
    await Promise.all([waitForState(a, 'open'), waitForState(b, 'open')]);
    // Includes 0x0A: the payload's own newlines must not confuse the header line.
    const bytes = Buffer.from([0x00, 0x01, 0x02, 0xfe, 0xff, 0x0a, 0x41]);
    await a.setInputFiles('#file', { name: 'bytes.bin', mimeType: 'application/octet-stream', buffer: bytes });
    const received = b.locator('#log li.msg.binary');
    await received.waitFor();
    assert.equal(await received.locator('.size').textContent(), 'binary · 7 bytes');
    assert.equal(await received.locator('.hex').textContent(), '00 01 02 fe ff 0a 41');

    await a.click('#random-bytes');
    await b.locator('#log li.msg.binary').nth(1).waitFor();
    assert.equal(await b.locator('#log li.msg.binary').nth(1).locator('.size').textContent(), 'binary · 16 bytes');
    assert.match(await b.locator('#log li.msg.binary').nth(1).locator('.hex').textContent(), /^([0-9a-f]{2} ){15}[0-9a-f]{2}$/);
    // And a binary message published over HTTP.
    await server.publish('lobby', new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    await a.locator('#log li.msg.binary .hex', { hasText: 'de ad be ef' }).waitFor();
    await Promise.all([a.context().close(), b.context().close()]);
  });

  test('7. an XSS payload renders as text and runs nothing', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const a = await openPage(browser, server);
    const b = await openPage(browser, server);
    await Promise.all([waitForState(a, 'open'), waitForState(b, 'open')]);
    const xss = '<img src=x onerror=alert(1)>';
    await type(a, xss);
    await waitForMessages(a, [xss]); // before the next sender, so the order is known
    await server.publish('lobby', '<script>alert(2)</script><b>bold?</b>');
    for (const page of [a, b]) {
      await waitForMessages(page, [xss, '<script>alert(2)</script><b>bold?</b>']);
      assert.equal(await page.locator('#log img, #log script, #log b').count(), 0);
      assert.deepEqual(page.seen.dialogs, []);
      assert.ok(!page.seen.requests.some((url) => url.endsWith('/x')), 'the img was never requested');
    }
    await Promise.all([a.context().close(), b.context().close()]);
  });

  test('8. the live feed panel receives ticker lines', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await openPage(browser, server);
    await page.locator('#feed-log li').nth(1).waitFor({ timeout: WAIT });
    const lines = await page.$$eval('#feed-log li', (items) => items.map((li) => li.textContent));
    assert.ok(lines.every((line) => line.trim().length > 0));
    assert.match(await page.textContent('#feed-status'), /live/);
    await page.context().close();
  });
});
