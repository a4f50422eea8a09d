// Who is connected (issue 15): senders' names on messages, the "who is here" list,
// a token that expires and is refreshed from #token-url= without losing a message,
// the operator's disconnect (4003: no reconnect) and room delete (4004), and a guest's
// unverified display name on the zero-configuration server.
//
// Tokens are minted here with `jose` (an implementation independent of the server's).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { SignJWT } from 'jose';
import {
  Server, WAIT, launchBrowser, openPage, messageTexts, waitForMessages, waitForState, type,
  screenshotPath,
} from './helpers.js';

const SECRET = 'browser-tests-jwt-secret-at-least-32-bytes';
const ADMIN = 'browser-tests-operator-token';
const LEEWAY_S = 30; // the server accepts a token this long after its exp

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** An HS256 token for `sub` signed with SECRET; `exp` in seconds since 1970. */
function mint({ sub, name, exp = nowSeconds() + 3600 }) {
  const claims = name ? { name } : {};
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .setNotBefore(nowSeconds() - 60)
    .setExpirationTime(exp)
    .sign(new TextEncoder().encode(SECRET));
}

function startSignedServer(args = []) {
  return Server.start({ args: ['--jwt-secret', SECRET, '--admin-token', ADMIN, ...args] });
}

/** A request as the operator (Authorization: Bearer <admin token>). */
async function operator(server, method, path, body) {
  const response = await fetch(server.url + path.replace(/^\//, ''), {
    method, body, headers: { Authorization: `Bearer ${ADMIN}` }, signal: AbortSignal.timeout(WAIT),
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : null, text };
}

/** The people listed in the "who is here" card: [{ key, text, verified, connections }]. */
const people = (page) => page.$$eval('#people li', (items) => items.map((li) => ({
  key: li.dataset.key,
  text: li.querySelector('.sender').textContent,
  verified: li.classList.contains('verified'),
  connections: li.querySelector('.connections')?.textContent || '',
})));

/** The sender shown on each delivered message: { text, sender, verified }. */
const senders = (page) => page.$$eval('#log li.msg:not(.pending)', (items) => items.map((li) => ({
  text: li.querySelector('.text')?.textContent,
  sender: li.querySelector('.sender')?.textContent ?? null,
  verified: li.querySelector('.sender')?.classList.contains('verified') ?? null,
})));

/** Checks `condition` every 50 ms until it holds (at most WAIT). */
async function until(condition) {
  const deadline = Date.now() + WAIT;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`never became true: ${condition}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const person = (page, key) => page.locator(`#people li[data-key="${key}"]`);

describe('identity and presence', () => {
  let browser;
  before(async () => { browser = await launchBrowser(); });
  after(async () => { await browser?.close(); });

  test('two signed-in users see each other on messages and in the list; a third tab is no second entry; closing a page leaves', async (t) => {
    const server = await startSignedServer();
    t.after(() => server.stop());
    const alice = await openPage(browser, server, { path: `#token=${await mint({ sub: 'alice', name: 'Alice' })}` });
    const bob = await openPage(browser, server, { path: `#token=${await mint({ sub: 'bob', name: 'Bob' })}` });
    await Promise.all([waitForState(alice, 'open'), waitForState(bob, 'open')]);
    // The token left the address bar (it stays in this tab's sessionStorage).
    assert.ok(!alice.url().includes('token='), alice.url());

    // Each sees the other (from a join frame or from the welcome, whichever came).
    await person(alice, 'user:bob').waitFor();
    await person(bob, 'user:alice').waitFor();
    assert.match(await alice.textContent('#you'), /Alice/);

    await type(alice, 'hello from alice');
    await waitForMessages(bob, ['hello from alice']);
    await type(bob, 'hello from bob');
    await waitForMessages(alice, ['hello from alice', 'hello from bob']);
    const expected = [
      { text: 'hello from alice', sender: 'Alice', verified: true },
      { text: 'hello from bob', sender: 'Bob', verified: true },
    ];
    await waitForMessages(bob, ['hello from alice', 'hello from bob']);
    assert.deepEqual(await senders(alice), expected);
    assert.deepEqual(await senders(bob), expected);

    // A second tab of alice's: the server counts her once (connections: 2).
    const alice2 = await openPage(browser, server, { context: alice.context(), path: `#token=${await mint({ sub: 'alice', name: 'Alice' })}` });
    await waitForState(alice2, 'open');
    await person(alice2, 'user:alice').waitFor();
    assert.deepEqual((await people(alice2)).map((p) => [p.key, p.connections]),
      [['user:alice', '×2'], ['user:bob', '']]);
    // A message from the new tab reaches bob after any join it could have caused.
    await type(alice2, 'from alice, second tab');
    await waitForMessages(bob, ['hello from alice', 'hello from bob', 'from alice, second tab']);
    assert.deepEqual((await people(bob)).map((p) => p.key), ['user:alice', 'user:bob']);
    assert.equal(await person(bob, 'user:alice').count(), 1);

    await alice.setViewportSize({ width: 1280, height: 800 });
    await alice.screenshot({ path: screenshotPath('identity.png') });
    await alice.setViewportSize({ width: 375, height: 800 });
    await alice.screenshot({ path: screenshotPath('identity-375.png'), fullPage: true });
    const overflow = await alice.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.equal(overflow, 0, 'no sideways scrolling at 375 px');

    // Bob closes his page: his last connection leaves.
    await bob.context().close();
    await person(alice, 'user:bob').waitFor({ state: 'detached' });
    assert.deepEqual((await people(alice)).map((p) => p.key), ['user:alice']);
    assert.deepEqual([...alice.seen.errors, ...alice2.seen.errors], []);
    await alice.context().close();
  });

  for (const transport of ['ws', 'sse', 'poll']) {
    test(`an expiring token is refreshed from #token-url= without losing a message (${transport})`, async (t) => {
      const server = await startSignedServer();
      t.after(() => server.stop());

      // The app's backend: every GET answers with a fresh token for alice (CORS: the
      // page is on another origin). Tokens handed out before `expiresAt` expire then
      // (exp + the server's leeway = expiresAt); later ones last an hour.
      const expiresAt = Date.now() + 6_000;
      const fetched = [];
      const tokenServer = http.createServer(async (request, response) => {
        const short = Date.now() < expiresAt;
        const exp = short ? Math.floor(expiresAt / 1000) - LEEWAY_S : nowSeconds() + 3600;
        fetched.push({ at: Date.now(), short });
        response.writeHead(200, { 'Content-Type': 'text/plain', 'Access-Control-Allow-Origin': '*', 'Cache-Control': 'no-store' });
        response.end(await mint({ sub: 'alice', name: 'Alice', exp }));
      });
      await new Promise((resolve) => tokenServer.listen(0, '127.0.0.1', resolve));
      t.after(() => new Promise((resolve) => tokenServer.close(resolve)));
      const tokenUrl = `http://127.0.0.1:${tokenServer.address().port}/token`;

      const path = `${transport === 'ws' ? '' : '?transport=' + transport}#token-url=${encodeURIComponent(tokenUrl)}`;
      const page = await openPage(browser, server, { path });
      await waitForState(page, 'open');
      assert.ok(fetched.length > 0 && fetched.every((f) => f.short), 'the first tokens are the short ones');

      // Publish steadily (as the operator) from before the expiry until well after the
      // page has reconnected with a fresh token; alice also types one near the expiry.
      const published = [];
      let typed = false;
      const reconnected = () => fetched.some((f) => !f.short) && page.evaluate(() => window.threadcast.main.state === 'open');
      for (let i = 1; ; i++) {
        const text = `tick ${i}`;
        const answer = await operator(server, 'POST', '/publish/lobby', text);
        assert.equal(answer.status, 202, answer.text);
        published.push(text);
        if (!typed && Date.now() > expiresAt - 1_000) { await type(page, 'typed near the expiry'); typed = true; }
        if (Date.now() > expiresAt + 2_000 && await reconnected() && published.length >= 20) break;
        assert.ok(Date.now() < expiresAt + WAIT, 'the page did not come back with a fresh token in time');
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      for (let i = 1; i <= 3; i++) {
        await operator(server, 'POST', '/publish/lobby', `after ${i}`);
        published.push(`after ${i}`);
      }
      await waitForMessages(page, published, (text) => text !== 'typed near the expiry');
      // Every message exactly once, and the typed one too.
      const texts = await messageTexts(page);
      assert.equal(texts.filter((text) => text === 'typed near the expiry').length, 1, JSON.stringify(texts));
      assert.equal(texts.length, published.length + 1);
      assert.equal(await page.locator('#log li.gap').count(), 0);
      // It was the expiry that closed it, and a fresh token that brought it back.
      assert.match(await page.textContent('#log'), /token expired/i);
      assert.ok(fetched.some((f) => !f.short && f.at >= expiresAt), 'a fresh token was fetched after the expiry');
      assert.ok(Number(await page.getAttribute('#you', 'data-tokens-fetched')) >= 2);
      await page.context().close();
    });
  }

  test('POST /disconnect/alice closes every alice tab with 4003 (WebSocket, SSE, long poll), and they stay closed', async (t) => {
    const server = await startSignedServer();
    t.after(() => server.stop());
    const aliceToken = await mint({ sub: 'alice', name: 'Alice' });
    const alice1 = await openPage(browser, server, { path: `#token=${aliceToken}` });
    const alice2 = await openPage(browser, server, { path: `?transport=sse#token=${aliceToken}` });
    const alice3 = await openPage(browser, server, { path: `?transport=poll#token=${aliceToken}` });
    const bob = await openPage(browser, server, { path: `#token=${await mint({ sub: 'bob', name: 'Bob' })}` });
    const alices = [alice1, alice2, alice3];
    await Promise.all([...alices, bob].map((page) => waitForState(page, 'open')));
    await person(bob, 'user:alice').waitFor();
    // The poll tab's poll is waiting at the server: a waiting poll counts as a member
    // (4 = alice's WebSocket, SSE stream and poll, and bob).
    await until(async () => (await operator(server, 'GET', '/rooms')).json.rooms.find((room) => room.name === 'lobby')?.members === 4);
    const socketsBefore = alice1.seen.websockets.length;
    const requestsBefore = (page, path) => page.seen.requests.filter((url) => url.includes(path)).length;
    const eventsBefore = requestsBefore(alice2, '/events/');
    const pollsBefore = requestsBefore(alice3, '/poll/');

    const answer = await operator(server, 'POST', '/disconnect/alice');
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.json.sub, 'alice');
    assert.ok(answer.json.closed >= 2, answer.text); // both tabs' rooms (and their feeds)

    for (const page of alices) {
      await page.locator('#status[data-close-code="4003"]').waitFor();
      assert.equal(await page.textContent('#status'), 'disconnected by the operator');
      assert.equal(await page.textContent('#toggle'), 'Connect');
      assert.match(await page.textContent('#log'), /Disconnected by the operator/);
      // Nothing is scheduled: no retry timer, no token fetch, the connection is stopped.
      assert.deepEqual(await page.evaluate(() => ({
        stopped: window.threadcast.main.stopped, timers: Object.keys(window.threadcast.main.timers),
      })), { stopped: true, timers: [] });
    }
    await person(bob, 'user:alice').waitFor({ state: 'detached' });
    // A bounded check that nothing comes back: longer than the first reconnect delays
    // (0.5 s, 1 s), then the server lists no alice and the pages opened nothing new.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const presence = await operator(server, 'GET', '/presence/lobby');
    assert.equal(presence.status, 200, presence.text);
    assert.deepEqual(presence.json.users.map((user) => user.sub), ['bob']);
    assert.equal(alice1.seen.websockets.length, socketsBefore);
    assert.equal(requestsBefore(alice2, '/events/'), eventsBefore);
    // At most the poll that answered with `closed` (and none after it).
    assert.ok(requestsBefore(alice3, '/poll/') <= pollsBefore + 1);
    await alice1.screenshot({ path: screenshotPath('disconnected.png') });

    // The user may come back by hand.
    await alice1.click('#toggle');
    await waitForState(alice1, 'open');
    await person(bob, 'user:alice').waitFor();
    await Promise.all([...alices, bob].map((page) => page.context().close()));
  });

  test('DELETE /rooms/lobby: the page says so and joins the new, empty room', async (t) => {
    const server = await startSignedServer();
    t.after(() => server.stop());
    const page = await openPage(browser, server, { path: `#token=${await mint({ sub: 'alice', name: 'Alice' })}` });
    await waitForState(page, 'open');
    await type(page, 'before the delete');
    await waitForMessages(page, ['before the delete']);
    const answer = await operator(server, 'DELETE', '/rooms/lobby');
    assert.equal(answer.status, 200, answer.text);
    await page.locator('#log li.system', { hasText: 'deleted this room' }).waitFor();
    await page.locator('#log li.system.epoch', { hasText: 'history started over' }).waitFor();
    await waitForState(page, 'open');
    await type(page, 'after the delete');
    const after = page.locator('#log li.msg:not(.pending)', { hasText: 'after the delete' });
    await after.waitFor();
    assert.equal(await after.getAttribute('data-id'), '1', 'the first message of the new room');
    await page.context().close();
  });

  test('an expired pasted token: the page asks for a new one and goes on with it', async (t) => {
    const server = await startSignedServer();
    t.after(() => server.stop());
    const expired = await mint({ sub: 'alice', name: 'Alice', exp: nowSeconds() - LEEWAY_S - 60 });
    const page = await openPage(browser, server, { path: `#token=${expired}` });
    await page.locator('#token-prompt:not([hidden])', { hasText: 'expired' }).waitFor();
    assert.equal(await page.textContent('#status'), 'waiting for a new token');
    await page.fill('#token-input', await mint({ sub: 'alice', name: 'Alice' }));
    await page.click('#token-form button');
    await waitForState(page, 'open');
    assert.equal(await page.isHidden('#token-prompt'), true);
    await person(page, 'user:alice').waitFor();
    await page.context().close();
  });

  test('the zero-configuration demo: a guest display name shows as unverified, on every transport', async (t) => {
    const server = await Server.start();
    t.after(() => server.stop());
    const reader = await openPage(browser, server);
    const bob = await openPage(browser, server);
    const fake = await openPage(browser, server, { path: '?transport=sse' });
    const poll = await openPage(browser, server, { path: '?transport=poll' });
    for (const page of [reader, bob, fake, poll]) await waitForState(page, 'open');
    assert.equal(await reader.isVisible('#name-form'), true, 'the name field is offered');
    assert.equal(await reader.isVisible('#token-form'), false, 'no token field on a server without tokens');

    for (const [page, name] of [[bob, 'Bob'], [fake, 'Alice'], [poll, '<img src=x onerror=alert(1)>']]) {
      await page.fill('#name-input', name);
      await page.press('#name-input', 'Enter');
      await page.locator('#you .sender.unverified', { hasText: `${name} (unverified)` }).waitFor();
      await waitForState(page, 'open');
    }
    // Bob and "Alice" (a guest who typed a name someone else has) are listed, unverified;
    // the poll page is not (long polling is not in presence).
    await person(reader, 'guest:Bob').waitFor();
    await person(reader, 'guest:Alice').waitFor();
    const sent = [];
    for (const [page, text] of [[bob, 'hi from bob'], [fake, 'hi from a fake alice'], [poll, 'hi over long polling']]) {
      await type(page, text);
      sent.push(text);
      await waitForMessages(reader, sent);
    }
    assert.deepEqual(await senders(reader), [
      { text: 'hi from bob', sender: 'Bob (unverified)', verified: false },
      { text: 'hi from a fake alice', sender: 'Alice (unverified)', verified: false },
      { text: 'hi over long polling', sender: '<img src=x onerror=alert(1)> (unverified)', verified: false },
    ]);
    assert.deepEqual((await people(reader)).filter((p) => p.key.startsWith('guest:')).map((p) => [p.text, p.verified]),
      [['Alice (unverified)', false], ['Bob (unverified)', false]]);
    assert.equal(await reader.locator('#log img, #people img').count(), 0);
    await reader.screenshot({ path: screenshotPath('guests.png') });
    for (const page of [reader, bob, fake, poll]) {
      assert.deepEqual(page.seen.dialogs, []);
      await page.context().close();
    }
  });
});
