// Lesson mode (issue 17): the page opened with ?inspect=1 opens its room WebSocket with
// inspect=1, and the inspector panel shows what the server saw of that connection
// (docs/PROTOCOL.md, "Lesson mode: the inspector"). Every check reads the panel's DOM
// and compares it with what Node computes itself (SHA-1, masking) or with the server
// process (/proc/PID/task/TID).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import {
  Server, WAIT, launchBrowser, openPage, waitForState, waitForMessages, screenshotPath,
} from './helpers.js';
import {
  WEBSOCKET_GUID, headerBytes, hexBytes, lengthBits, lessonText, lessonBytes, xorMask, toLines, headerValue,
  closeStarter, opcodeName, MAX_ROWS,
} from '../../public/inspector.js';

/* The panel's pure functions, in Node ------------------------------------------------- */

describe('inspector.js, without a browser', () => {
  test('header bytes: the three length encodings, FIN, RSV, opcode and MASK', () => {
    const frame = (len, extra = {}) => ({ fin: true, rsv: [false, false, false], opcode: 1, masked: true, len, ...extra });
    assert.deepEqual(headerBytes(frame(5)), ['81', '85']);
    assert.deepEqual(headerBytes(frame(125)), ['81', 'fd']);
    assert.deepEqual(headerBytes(frame(126)), ['81', 'fe', '00', '7e']);
    assert.deepEqual(headerBytes(frame(65535)), ['81', 'fe', 'ff', 'ff']);
    assert.deepEqual(headerBytes(frame(70000)), ['81', 'ff', '00', '00', '00', '00', '00', '01', '11', '70']);
    // WEBSOCKET_BASICS.md's server frames: binary, unmasked.
    assert.deepEqual(headerBytes({ fin: true, opcode: 2, masked: false, len: 300 }), ['82', '7e', '01', '2c']);
    assert.deepEqual(headerBytes({ fin: false, rsv: [true, false, true], opcode: 0, masked: false, len: 0 }), ['50', '00']);
    assert.deepEqual(headerBytes({ fin: true, opcode: 9, masked: false, len: 0, len_bits: 7 }), ['89', '00']);
    assert.deepEqual([5, 125, 126, 65535, 65536, 70000].map(lengthBits), [7, 7, 16, 16, 64, 64]);
  });

  test('masking: the RFC example unmasks to "Hello"; lesson payloads have exact sizes', () => {
    assert.equal(xorMask('7f9f4d5158', '37fa213d'), '48 65 6c 6c 6f');
    assert.equal(xorMask('48 65 6c 6c 6f', '37 fa 21 3d'), '7f 9f 4d 51 58');
    assert.deepEqual(hexBytes('7F:9f 4d'), ['7f', '9f', '4d']);
    for (const n of [5, 125, 126, 70000]) assert.equal(Buffer.byteLength(lessonText(n)), n);
    assert.equal(lessonText(5), 'hello');
    assert.deepEqual([...lessonBytes()], [...Array(16).keys()]);
    assert.deepEqual([0, 1, 2, 8, 9, 10, 3].map(opcodeName), ['continuation', 'text', 'binary', 'close', 'ping', 'pong', 'reserved']);
    assert.match(closeStarter('in'), /client/);
    assert.match(closeStarter('out'), /server/);
  });

  test('handshake lines: an array or one string, headers found case-insensitively', () => {
    const lines = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nsec-websocket-accept: abc=\r\n\r\n';
    assert.deepEqual(toLines(lines), ['HTTP/1.1 101 Switching Protocols', 'Upgrade: websocket', 'sec-websocket-accept: abc=']);
    assert.equal(headerValue(lines, 'Sec-WebSocket-Accept'), 'abc=');
    assert.equal(headerValue(['Host: x'], 'Sec-WebSocket-Key'), null);
    assert.equal(WEBSOCKET_GUID, '258EAFA5-E914-47DA-95CA-C5AB0DC85B11');
  });
});

/* The panel in a real browser, against a real server ---------------------------------- */

/** Sec-WebSocket-Accept for `key`, computed here (RFC 6455 §4.2.2). */
function acceptFor(key) {
  return createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64');
}

/** A frame row of the inspector: `li.frame` with these data attributes. */
function frameRow(page, attributes) {
  const selector = Object.entries(attributes).map(([key, value]) => `[data-${key}="${value}"]`).join('');
  return page.locator(`#insp-frames li.frame${selector}`);
}

/** Opens the page with ?inspect=1 and waits until the room is joined and the inspector
 *  has shown the handshake. */
async function inspectedPage(browser, server, options = {}) {
  const page = await openPage(browser, server, { path: '?inspect=1', ...options });
  await waitForState(page, 'open');
  await page.locator('#insp-accept [data-step="answered"]').waitFor();
  return page;
}

/** The hex of a row's key/value field (`preview`, `unmasked`, `mask`). */
async function field(row, name) {
  return (await row.locator(`.kv.${name} .v`).first().textContent()).trim();
}

describe('lesson mode: the inspector (?inspect=1)', () => {
  let browser;
  before(async () => { browser = await launchBrowser(); });
  after(async () => { await browser?.close(); });

  test('a page without ?inspect=1 has no inspector and asks for no inspection', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await openPage(browser, server);
    await waitForState(page, 'open');
    assert.equal(await page.locator('#inspector').isHidden(), true);
    assert.equal(page.seen.websockets.some((url) => url.includes('inspect')), false);
    assert.equal(page.seen.requests.some((url) => url.endsWith('/inspector.js')), false);
    await page.context().close();
  });

  test('the handshake as received and answered; the accept step by step matches the 101 (and Node\'s SHA-1)', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await inspectedPage(browser, server);
    // Only the room's socket is inspected: not the live feed's, not the echo's.
    const inspected = page.seen.websockets.filter((url) => url.includes('inspect=1'));
    assert.equal(inspected.length, 1, JSON.stringify(page.seen.websockets));
    assert.match(inspected[0], /\/ws\/lobby\?(.*&)?inspect=1/);

    const step = (name) => page.locator(`#insp-accept [data-step="${name}"] .v`).textContent();
    const key = await step('key');
    assert.match(key, /^[A-Za-z0-9+/]{22}==$/);
    assert.equal(await step('guid'), WEBSOCKET_GUID);
    assert.equal(await step('concatenated'), key + WEBSOCKET_GUID);
    assert.equal((await step('sha1')).replace(/ /g, ''), createHash('sha1').update(key + WEBSOCKET_GUID).digest('hex'));
    assert.equal(await step('base64'), acceptFor(key));
    assert.equal(await step('answered'), acceptFor(key));
    await page.locator('#insp-accept [data-step="answered"][data-matches="true"]').waitFor();
    await page.locator('#insp-accept [data-step="page"][data-matches="true"]').waitFor();

    // The request and the response as the server saw them.
    const request = await page.textContent('.insp-request');
    const response = await page.textContent('.insp-response');
    assert.match(request.split('\n')[0], /^GET \/ws\/lobby\?.*inspect=1.* HTTP\/1\.1$/);
    assert.equal(headerValue(request, 'Sec-WebSocket-Key'), key);
    assert.match(headerValue(request, 'Upgrade'), /websocket/i);
    assert.match(response.split('\n')[0], /^HTTP\/1\.1 101/);
    assert.equal(headerValue(response, 'Sec-WebSocket-Accept'), acceptFor(key));

    // Inspect frames are not room messages: none in the chat.
    assert.equal(await page.locator('#log li.msg').count(), 0);
    assert.doesNotMatch(await page.textContent('#log'), /inspect/);
    assert.deepEqual(page.seen.errors, []);
    await page.context().close();
  });

  test('the reader and writer thread ids are threads of the server process', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await inspectedPage(browser, server);
    const reader = page.locator('#insp-threads [data-role="reader"][data-tid]');
    const writer = page.locator('#insp-threads [data-role="writer"][data-tid]');
    await reader.waitFor();
    await writer.waitFor();
    const pid = server.child.pid;
    assert.equal(await page.textContent('#insp-pid'), String(pid));
    const tids = [await reader.getAttribute('data-tid'), await writer.getAttribute('data-tid')];
    assert.notEqual(tids[0], tids[1]);
    for (const tid of tids) {
      assert.match(tid, /^\d+$/);
      assert.ok(existsSync(`/proc/${pid}/task/${tid}`), `thread ${tid} is not a thread of server ${pid}`);
    }
    // The writer's name says which connection it writes for (ARCHITECTURE.md, Threads).
    assert.match(readFileSync(`/proc/${pid}/task/${tids[1]}/comm`, 'utf8'), /^ws-write-/);
    const watch = await page.textContent('#insp-threads');
    assert.ok(watch.includes(`top -H -p ${pid}`), watch);
    assert.ok(watch.includes(`ps -L -p ${pid}`), watch);
    await page.context().close();
  });

  test('text of 5, 126 and 70,000 bytes: 7-, 16- and 64-bit lengths, opcode 1; binary is opcode 2', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await inspectedPage(browser, server);
    const outText = frameRow(page, { dir: 'out', kind: 'text', masked: 'false' });
    for (const [n, bits] of [[5, 7], [126, 16], [70000, 64]]) {
      const before = await outText.count();
      await page.click(`#insp-send-${n}`);
      const row = frameRow(page, { dir: 'in', kind: 'text', opcode: 1, len: n, 'len-bits': bits, masked: 'true', fin: 'true' });
      await row.waitFor();
      // What Node sees in the same fields: the key, the bytes as sent, unmasked.
      const mask = await field(row, 'mask');
      assert.equal(hexBytes(mask).length, 4);
      const wire = await field(row, 'preview');
      const unmasked = await field(row, 'unmasked');
      const shown = hexBytes(unmasked).length;
      assert.ok(shown > 0 && shown <= n);
      assert.equal(unmasked.replace(/ /g, ''), Buffer.from(lessonText(n)).subarray(0, shown).toString('hex'));
      assert.equal(xorMask(wire, mask), unmasked);
      assert.equal(await field(row, 'header'), headerBytes({ fin: true, opcode: 1, masked: true, len: n }).join(' ') + ' + key');
      // The room's copy comes back to this page: a header line in front (so longer),
      // never masked, and over 32 KiB in fragments (a text frame with FIN 0, then
      // continuation frames, the last with FIN 1).
      await page.waitForFunction(([selector, count]) => document.querySelectorAll(selector).length > count,
        ['#insp-frames li.frame[data-dir="out"][data-kind="text"][data-masked="false"]', before], { timeout: WAIT });
      const copy = outText.last();
      const copyLen = Number(await copy.getAttribute('data-len'));
      assert.equal(Number(await copy.getAttribute('data-len-bits')), lengthBits(copyLen));
      if (n < 32 * 1024) {
        assert.equal(await copy.getAttribute('data-fin'), 'true');
        assert.ok(copyLen > n, `the copy is ${copyLen} bytes`);
      } else {
        assert.equal(await copy.getAttribute('data-fin'), 'false');
        const last = frameRow(page, { dir: 'out', kind: 'continuation', opcode: 0, fin: 'true' }).last();
        await last.waitFor();
        const lens = await page.$$eval('#insp-frames li.frame[data-dir="out"]', (rows) => rows.map((r) => [r.dataset.kind, Number(r.dataset.len), r.dataset.fin]));
        const from = lens.findLastIndex(([kind, , fin]) => kind === 'text' && fin === 'false');
        const pieces = lens.slice(from, lens.findIndex(([kind, , fin], i) => i > from && kind === 'continuation' && fin === 'true') + 1);
        assert.ok(pieces.length >= 3, JSON.stringify(pieces));
        assert.ok(pieces.reduce((sum, [, len]) => sum + len, 0) > n);
      }
    }
    await waitForMessages(page, [lessonText(5), lessonText(126), lessonText(70000)]);

    await page.click('#insp-send-binary');
    const binary = frameRow(page, { dir: 'in', kind: 'binary', opcode: 2, len: 16, 'len-bits': 7, masked: 'true' });
    await binary.waitFor();
    assert.ok('00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f'.startsWith(await field(binary, 'unmasked')));
    await frameRow(page, { dir: 'out', kind: 'binary', opcode: 2, masked: 'false' }).first().waitFor();
    await page.locator('#log li.msg.binary:not(.pending)').waitFor();

    // The inspector's own frames never reach the chat.
    assert.equal(await page.locator('#log li.msg').count(), 4);
    assert.doesNotMatch(await page.textContent('#log'), /"type":"inspect"/);
    assert.ok(await page.locator('#insp-frames > li').count() <= MAX_ROWS);
    await page.evaluate(() => { document.activeElement.blur(); });
    await page.locator('#inspector').scrollIntoViewIfNeeded();
    await page.screenshot({ path: screenshotPath('inspector.png'), fullPage: true });
    assert.deepEqual(page.seen.errors, []);
    await page.context().close();
  });

  test('the server\'s pings and the page\'s pongs appear, and the figures after them', async (t) => {
    const server = await Server.start({ args: ['--ping-interval', '1s', '--pong-timeout', '3s'] });
    t.after(() => server.stop());
    const page = await inspectedPage(browser, server);
    await frameRow(page, { dir: 'out', kind: 'ping', opcode: 9, masked: 'false' }).first().waitFor();
    const pong = frameRow(page, { dir: 'in', kind: 'pong', opcode: 10, masked: 'true' }).first();
    await pong.waitFor();
    await page.locator('#insp-figures [data-figure="rtt"][data-micros]:not([data-micros=""])').waitFor();
    assert.match(await page.textContent('#insp-figures [data-figure="rtt"]'), /ms$/);
    assert.match(await page.textContent('#insp-figures [data-figure="bytes_out"]'), /^[\d,]+$/);
    await page.context().close();
  });

  test('a close from the page: 1000, started by the page; the page comes back with a new handshake', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await inspectedPage(browser, server);
    const firstKey = await page.textContent('#insp-accept [data-step="key"] .v');
    await page.click('#insp-close');
    await page.locator('#insp-frames li[data-kind="close"][data-source="page"][data-close-code="1000"][data-starter="client"]').waitFor();
    await page.locator('#insp-frames li[data-kind="closed"][data-close-code="1000"][data-starter="client"]').waitFor();
    // The page reconnects by itself: a second connection, a fresh key.
    await page.locator('#insp-state[data-state="open"]', { hasText: 'connection 2' }).waitFor();
    await page.waitForFunction((key) => {
      const shown = document.querySelector('#insp-accept [data-step="key"] .v');
      return shown && shown.textContent !== key;
    }, firstKey, { timeout: WAIT });
    await page.locator('#insp-accept [data-step="answered"][data-matches="true"]').waitFor();
    await page.context().close();
  });

  test('a close from the server for a message too big: 1009, started by the server', async (t) => {
    const server = await Server.start({ args: ['--max-message-bytes', '64KiB'] });
    t.after(() => server.stop());
    const page = await inspectedPage(browser, server);
    await page.click('#insp-send-70000');
    await page.locator('#insp-frames li[data-kind="closed"][data-close-code="1009"][data-starter="server"]').waitFor();
    assert.match(await page.textContent('#insp-frames li[data-kind="closed"][data-close-code="1009"]'), /message too big/);
    // The page comes back by itself on a new connection.
    await page.locator('#insp-state[data-state="open"]', { hasText: 'connection 2' }).waitFor();
    await page.context().close();
  });

  test('a close from the server (a graceful stop): 1001, started by the server', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const page = await inspectedPage(browser, server, { viewport: { width: 375, height: 812 } });
    await page.click('#insp-send-5');
    await frameRow(page, { dir: 'in', kind: 'text', len: 5 }).waitFor();
    await server.stop();
    // The browser's close event: 1001, and the page did not start it. (The server's
    // close frame itself is never reported: nothing may follow a close frame.)
    await page.locator('#insp-frames li[data-kind="closed"][data-close-code="1001"][data-starter="server"]').waitFor();
    assert.match(await page.textContent('#insp-frames li[data-kind="closed"]'), /going away/);

    // 375 px: nothing wider than the screen.
    const widest = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(widest <= 375, `page is ${widest}px wide`);
    // The close event's row in view (the page has begun reconnecting below it).
    await page.evaluate(() => {
      document.activeElement.blur();
      document.querySelector('#insp-frames li[data-kind="closed"][data-close-code="1001"]').scrollIntoView({ block: 'end' });
    });
    await page.mouse.move(0, 0);
    await page.screenshot({ path: screenshotPath('inspector-375.png') });
    await page.context().close();
  });
});
