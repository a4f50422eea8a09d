// app.js: the threadcast demo page. It wires the page to three connections:
//   - the room you are in (connection.js keeps it joined across drops),
//   - the Echo panel, a bare WebSocket to /echo that times each round trip,
//   - the Live feed panel, a second room connection to the `ticker` room.
// Everything a message contains is shown with textContent, never innerHTML, so a
// message can never add markup or script to the page.

import { RoomConnection, backoffDelay } from './connection.js';
import { Outbox, payloadOf } from './outbox.js';
import { sendTokenFirst, useFirstMessageAuth, wsTokenQuery } from './transports.js';
import {
  ROOM_NAME, newClientId, hexPreview, sizeLabel, closeCodeText,
} from './protocol.js';

/* ---------------------------------------------------------------------------------
 * 1. Settings from the address: ?transport=ws|sse|poll  #room=ops&token=SECRET
 * ------------------------------------------------------------------------------- */

const query = new URLSearchParams(location.search);
const forcedTransport = ['ws', 'sse', 'poll'].includes(query.get('transport')) ? query.get('transport') : null;
// How soon to try WebSocket again after falling back (seconds; for tests and demos).
const wsRetryMs = Number(query.get('retry_ws')) * 1000 || undefined;

function hashParams() {
  return new URLSearchParams(location.hash.slice(1));
}

const MAX_LOG_ITEMS = 500;
const MAX_PANEL_ITEMS = 30;

/* ---------------------------------------------------------------------------------
 * 2. Small DOM helpers
 * ------------------------------------------------------------------------------- */

const $ = (id) => document.getElementById(id);

/** Creates an element; `text` is set with textContent, so it is never parsed as HTML. */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function timeElement(ms, title) {
  const time = el('time', 'time', new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false }));
  time.dateTime = new Date(ms).toISOString();
  time.title = title;
  return time;
}

/** Appends to a list, keeping at most `max` items and following the bottom if the
 *  reader was already there. */
function appendTo(list, item, max, before = null) {
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.insertBefore(item, before);
  while (list.children.length > max) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
}

/* ---------------------------------------------------------------------------------
 * 3. The message log
 * ------------------------------------------------------------------------------- */

const log = $('log');

/** Client ids of messages sent from this tab, to mark them "you". Kept in
 *  sessionStorage (this tab only), so a reload still knows which were yours. */
const myClientIds = new Set(readJson(sessionStorage, 'threadcast.mine'));

function readJson(storage, key) {
  try {
    const value = JSON.parse(storage.getItem(key) || '[]');
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}

function rememberMine(cid) {
  myClientIds.add(cid);
  try {
    sessionStorage.setItem('threadcast.mine', JSON.stringify([...myClientIds].slice(-500)));
  } catch {
    // storage full or disabled: "you" marks are only lost after a reload
  }
}

/** Adds a line to the log, above any pending messages (those stay at the bottom). */
function addToLog(item) {
  appendTo(log, item, MAX_LOG_ITEMS, log.querySelector('li.pending'));
}

function systemLine(text, kind = '') {
  const item = el('li', 'system ' + kind);
  item.append(timeElement(Date.now(), 'local time'), el('span', 'text', text));
  addToLog(item);
}

/** The body of a message: text as text, binary as size + hex preview. */
function messageBody(payload) {
  if (typeof payload === 'string') return [el('span', 'text', payload)];
  return [el('span', 'size', 'binary · ' + sizeLabel(payload.length)), el('code', 'hex', hexPreview(payload))];
}

function showMessage(header, payload) {
  const mine = header.cid && myClientIds.has(header.cid);
  const item = el('li', 'msg' + (typeof payload === 'string' ? '' : ' binary') + (mine ? ' mine' : ''));
  if (header.id !== undefined) item.dataset.id = header.id;
  if (header.epoch) item.dataset.epoch = header.epoch;
  if (header.cid) item.dataset.cid = header.cid;
  const meta = el('span', 'meta');
  // `ts` is when the server accepted the message: the same for every reader.
  meta.append(timeElement(header.ts || Date.now(), header.ts ? 'sent (server time)' : 'received'));
  if (header.id !== undefined) meta.append(el('span', 'id', '#' + header.id));
  if (mine) meta.append(el('span', 'badge', 'you'));
  item.append(meta, ...messageBody(payload));
  addToLog(item);
  if (header.cid) removePending(header.cid);
}

function showPending(outboxItem) {
  const payload = payloadOf(outboxItem);
  const item = el('li', 'msg mine pending' + (typeof payload === 'string' ? '' : ' binary'));
  item.dataset.cid = outboxItem.cid;
  const meta = el('span', 'meta');
  meta.append(timeElement(outboxItem.created, 'typed (local time)'), el('span', 'badge pending-badge', 'pending'));
  item.append(meta, ...messageBody(payload));
  appendTo(log, item, MAX_LOG_ITEMS + 1000);
}

function removePending(cid) {
  const item = log.querySelector(`li.pending[data-cid="${CSS.escape(cid)}"]`);
  if (item) item.remove();
  updateOutboxCount();
}

/* ---------------------------------------------------------------------------------
 * 4. Status: state, transport, members
 * ------------------------------------------------------------------------------- */

const statusPill = $('status');
let statusTicker = null;

function showStatus({ state, label, retryAt, lastClose }) {
  clearInterval(statusTicker);
  statusPill.dataset.state = state;
  $('transport').textContent = label;
  $('transport').dataset.transport = main ? main.kind : '';
  const render = () => {
    if (state === 'reconnecting') {
      const seconds = Math.max(0, (retryAt - Date.now()) / 1000);
      statusPill.textContent = `reconnecting in ${seconds.toFixed(1)} s`;
    } else if (state === 'closed') {
      const why = lastClose ? [lastClose.code, lastClose.reason].filter(Boolean).join(' ') : '';
      statusPill.textContent = why ? `closed · ${why}` : 'closed';
    } else {
      statusPill.textContent = state === 'connecting' ? 'connecting…' : 'open';
    }
  };
  render();
  if (state === 'reconnecting') statusTicker = setInterval(render, 100);
  $('detail').textContent = lastClose && lastClose.code && state !== 'open'
    ? `Last close: ${lastClose.code} (${closeCodeText(lastClose.code)})${lastClose.reason ? ' · “' + lastClose.reason + '”' : ''}`
    : '';
  if (state !== 'open') showMembers(null);
  $('toggle').textContent = state === 'closed' ? 'Connect' : 'Disconnect';
}

function showMembers(count) {
  $('members').textContent = count === null ? '– online' : `${count} online`;
  $('members').dataset.count = count === null ? '' : count;
}

function updateOutboxCount() {
  const waiting = main ? outbox.forRoom(main.room).length : 0;
  $('outbox-count').textContent = waiting ? `${waiting} waiting to be sent` : '';
  if (outbox.storageError) $('outbox-count').textContent += ' (not saved: storage unavailable)';
}

/* ---------------------------------------------------------------------------------
 * 5. The room: join, switch, send
 * ------------------------------------------------------------------------------- */

const outbox = new Outbox();
for (const item of outbox.items) myClientIds.add(item.cid);
let config = null;
let token = null;
let main = null;

function joinRoom(room) {
  if (main) main.stop('switching rooms');
  log.replaceChildren();
  $('room-name').textContent = room;
  $('room').value = room;
  document.title = `#${room} · threadcast`;
  main = new RoomConnection({
    room,
    wsBase: config.ws_url,
    token,
    forced: forcedTransport,
    replay: true, // start with the room's recent history
    outbox,
    wsRetryMs,
    on: {
      status: showStatus,
      welcome(header, { changed, previous }) {
        if (changed) {
          systemLine(`The room's history started over (epoch ${previous} → ${header.epoch}: a server restart, or an instance that lost Redis): message ids start again; messages above are from before.`, 'epoch');
        } else if (!previous) {
          systemLine(`Joined #${room} over ${main.label}.`);
        } else {
          systemLine(`Back in #${room} over ${main.label}: resuming after #${main.lastId}.`);
        }
      },
      message: showMessage,
      gap({ from, to, detected }) {
        const item = el('li', 'gap', `Messages #${from}–#${to} are no longer in the server's history: they were missed.${detected ? ' (noticed by the page)' : ''}`);
        addToLog(item);
      },
      members: showMembers,
      confirmed: (cid) => removePending(cid),
      rejected(cid, reason) {
        removePending(cid);
        systemLine(`A message was refused by the server (${reason}).`, 'error');
      },
      note: (text, kind) => systemLine(text, kind),
    },
  });
  for (const item of outbox.forRoom(room)) showPending(item);
  updateOutboxCount();
  main.start();
}

/** Puts a message in the outbox and hands it to the connection: it goes out now if
 *  the room is joined, else as soon as it is. Either way it shows as pending until
 *  the server confirms it. */
function sendPayload(payload) {
  const size = typeof payload === 'string' ? new TextEncoder().encode(payload).length : payload.length;
  if (config.max_message_bytes && size > config.max_message_bytes - 80) {
    systemLine(`Too big: ${sizeLabel(size)} (this server takes at most ${sizeLabel(config.max_message_bytes - 80)}).`, 'error');
    return;
  }
  const item = outbox.add(main.room, newClientId(), payload);
  rememberMine(item.cid);
  showPending(item);
  updateOutboxCount();
  main.send();
}

$('send-form').addEventListener('submit', (event) => {
  event.preventDefault(); // a form's Enter key submits it; stay on the page
  const input = $('message');
  if (!input.value || !main) return;
  sendPayload(input.value);
  input.value = '';
});

$('file').addEventListener('change', async (event) => {
  const file = event.target.files[0];
  event.target.value = '';
  if (file && main) sendPayload(new Uint8Array(await file.arrayBuffer()));
});

$('random-bytes').addEventListener('click', () => {
  if (main) sendPayload(crypto.getRandomValues(new Uint8Array(16)));
});

$('room-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const params = hashParams();
  params.set('room', $('room').value);
  location.hash = params.toString(); // the hashchange listener joins the room
});

window.addEventListener('hashchange', () => {
  if (!config) return; // still starting: start() reads the hash itself
  if ((hashParams().get('token') || null) !== token) { location.reload(); return; } // a new token
  const room = hashParams().get('room') || config.default_room || 'lobby';
  if (!ROOM_NAME.test(room)) { systemLine(`“${room}” is not a room name (1–64 of A-Z a-z 0-9 _ -).`, 'error'); return; }
  if (!main || room !== main.room) joinRoom(room);
});

$('toggle').addEventListener('click', () => {
  if (!main) return;
  if (main.state === 'closed') main.start();
  else main.stop('closed by you');
});

/* ---------------------------------------------------------------------------------
 * 6. Echo panel: a bare WebSocket to /echo, timing each round trip
 * ------------------------------------------------------------------------------- */

const echo = { socket: null, inFlight: [], waiting: [], counter: 0, attempt: 0, retry: null };

function echoStatus(state, text) {
  $('echo-status').dataset.state = state;
  $('echo-status').textContent = text;
}

function echoConnect() {
  clearTimeout(echo.retry);
  echoStatus('connecting', 'connecting…');
  const socket = new WebSocket(config.ws_url + '/echo' + wsTokenQuery(token));
  echo.socket = socket;
  socket.addEventListener('open', () => {
    sendTokenFirst(socket);
    echo.attempt = 0;
    echoStatus('open', 'open');
    for (const text of echo.waiting.splice(0)) echoSend(text);
  });
  // /echo sends every message back unchanged and in order, so the first reply
  // belongs to the oldest message still in flight.
  socket.addEventListener('message', (event) => {
    const sent = echo.inFlight.shift();
    if (!sent) return;
    const rtt = performance.now() - sent.at;
    const item = el('li', 'echo-item');
    item.append(el('span', 'text', String(event.data)), el('span', 'rtt', `${rtt < 10 ? rtt.toFixed(2) : rtt.toFixed(0)} ms`));
    appendTo($('echo-log'), item, MAX_PANEL_ITEMS);
  });
  // Reconnect with the same backoff as the room (messages in flight are lost: an
  // echo has nothing to resume).
  socket.addEventListener('close', (event) => {
    if (echo.socket !== socket) return;
    echo.socket = null;
    echo.inFlight = [];
    const delay = backoffDelay(echo.attempt++);
    echoStatus('reconnecting', `closed · ${event.code} · retry in ${Math.ceil(delay / 1000)} s`);
    echo.retry = setTimeout(echoConnect, delay);
  });
}

function echoSend(text) {
  const socket = echo.socket;
  if (!socket) { echo.waiting.push(text); echoConnect(); return; }
  // readyState: 0 CONNECTING, 1 OPEN, 2 CLOSING, 3 CLOSED. send() throws while CONNECTING.
  if (socket.readyState === WebSocket.CONNECTING) { echo.waiting.push(text); return; }
  if (socket.readyState !== WebSocket.OPEN) { echo.waiting.push(text); echoConnect(); return; }
  echo.inFlight.push({ at: performance.now() });
  socket.send(text);
}

$('echo-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('echo-input').value || 'ping';
  if (config) echoSend(text);
});

$('echo-burst').addEventListener('click', () => {
  if (!config) return;
  for (let i = 1; i <= 10; i++) echoSend(`ping ${++echo.counter}`);
});

/* ---------------------------------------------------------------------------------
 * 7. Live feed panel: the demo feed room, as it arrives
 * ------------------------------------------------------------------------------- */

let feed = null;

function startFeed() {
  const room = config.feed_room || 'ticker';
  $('feed-room').textContent = room;
  feed = new RoomConnection({
    room,
    wsBase: config.ws_url,
    token,
    forced: forcedTransport,
    replay: false, // only what arrives from now on
    outbox: null,
    wsRetryMs,
    on: {
      status({ state, label, retryAt }) {
        const text = state === 'reconnecting'
          ? `reconnecting in ${Math.max(0, (retryAt - Date.now()) / 1000).toFixed(0)} s`
          : state === 'open' ? `live · ${label}` : state;
        $('feed-status').dataset.state = state;
        $('feed-status').textContent = text;
      },
      welcome() {},
      message(header, payload) {
        const item = el('li', 'feed-item');
        item.append(timeElement(header.ts || Date.now(), 'published (server time)'),
          ...messageBody(payload));
        appendTo($('feed-log'), item, MAX_PANEL_ITEMS);
      },
      gap({ from, to }) {
        appendTo($('feed-log'), el('li', 'gap', `missed #${from}–#${to}`), MAX_PANEL_ITEMS);
      },
      members() {},
      confirmed() {},
      rejected() {},
      note() {},
    },
  });
  feed.start();
}

/* ---------------------------------------------------------------------------------
 * 8. Start: read /config.json (retrying until the server answers), then connect
 * ------------------------------------------------------------------------------- */

async function loadConfig() {
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await fetch('/config.json', { cache: 'no-store' });
      if (response.ok) return await response.json();
    } catch {
      // the server is not answering yet: try again below
    }
    const delay = backoffDelay(attempt);
    showStatus({ state: 'reconnecting', label: '–', retryAt: Date.now() + delay, lastClose: null });
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function start() {
  config = await loadConfig();
  token = hashParams().get('token') || null;
  if (config.auth === 'first-message' && token) useFirstMessageAuth(token);
  if (config.token_required && !token) {
    showStatus({ state: 'closed', label: '–', lastClose: { code: null, reason: 'token required' } });
    systemLine('This server needs a token: open the page as …/#token=YOUR_TOKEN (the page sends it as ?token=).', 'error');
    return;
  }
  const room = hashParams().get('room') || config.default_room || 'lobby';
  joinRoom(ROOM_NAME.test(room) ? room : 'lobby');
  startFeed();
  echoConnect();
  // The browser noticed the network is back: do not wait out the backoff.
  window.addEventListener('online', () => {
    main.retryNow();
    feed.retryNow();
    if (!echo.socket) echoConnect();
  });
  // For the curious: in the console, `threadcast.main.lastId`, `threadcast.outbox.items`.
  window.threadcast = { get main() { return main; }, get feed() { return feed; }, outbox };
}

start();
