// app.js: the threadcast demo page. It wires the page to three connections:
//   - the room you are in (connection.js keeps it joined across drops),
//   - the Echo panel, a bare WebSocket to /echo that times each round trip,
//   - the Live feed panel, a second room connection to the `ticker` room.
// and shows who you are (a signed token, or a guest's display name) and who else is
// in the room.
// Everything a message contains is shown with textContent, never innerHTML, so a
// message can never add markup or script to the page.

import { RoomConnection, backoffDelay } from './connection.js';
import { Outbox, payloadOf } from './outbox.js';
import { sendTokenFirst, useFirstMessageAuth, wsTokenQuery, inspectWebSockets } from './transports.js';
import {
  ROOM_NAME, newClientId, hexPreview, sizeLabel, closeCodeText, describeUser, userKey, isVerified,
  tokenClaims, tokenExpired, guestName, CLOSE_DISCONNECTED,
} from './protocol.js';

/* ---------------------------------------------------------------------------------
 * 1. Settings from the address: ?transport=ws|sse|poll
 *    #room=ops  #token=TOKEN  #token-url=URL  #name=Bob
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

/** Who sent a message, from the `from` the *server* put in its header (a client
 *  cannot set it). A verified user and a guest look different, and a guest's name
 *  always says "(unverified)". No `from`: nothing is shown. */
function senderElement(from) {
  const sender = describeUser(from);
  if (!sender) return null;
  const node = el('span', 'sender ' + (sender.verified ? 'verified' : 'unverified'), sender.text);
  node.title = sender.title;
  return node;
}

/** Was this message sent by you? From this tab (its client id), or from another tab or
 *  device signed in as the same verified user. A guest name proves nothing, so it
 *  never makes a message "yours". */
function isMine(header) {
  if (header.cid && myClientIds.has(header.cid)) return true;
  const me = whoYouAre().user;
  return isVerified(me) && isVerified(header.from) && header.from.sub === me.sub;
}

function showMessage(header, payload) {
  const mine = isMine(header);
  const item = el('li', 'msg' + (typeof payload === 'string' ? '' : ' binary') + (mine ? ' mine' : ''));
  if (header.id !== undefined) item.dataset.id = header.id;
  if (header.epoch) item.dataset.epoch = header.epoch;
  if (header.cid) item.dataset.cid = header.cid;
  const meta = el('span', 'meta');
  const sender = senderElement(header.from);
  if (sender) meta.append(sender);
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

/** The status before the room connection exists, while the first token is fetched. */
const AUTHORIZING = { state: 'authorizing', label: '–', lastClose: null };

/** The status pill's text for states other than reconnecting and closed. */
const STATE_TEXT = {
  connecting: 'connecting…',
  open: 'open',
  authorizing: 'getting a token…',
};

function showStatus({ state, label, retryAt, lastClose }) {
  clearInterval(statusTicker);
  statusPill.dataset.state = state;
  // Tests and styles can tell why it closed: 4003 is "disconnected by the operator".
  statusPill.dataset.closeCode = state === 'closed' && lastClose && lastClose.code ? lastClose.code : '';
  $('transport').textContent = label;
  $('transport').dataset.transport = main ? main.kind : '';
  const render = () => {
    if (state === 'reconnecting') {
      const seconds = Math.max(0, (retryAt - Date.now()) / 1000);
      statusPill.textContent = `reconnecting in ${seconds.toFixed(1)} s`;
    } else if (state === 'closed' && lastClose && lastClose.code === CLOSE_DISCONNECTED) {
      statusPill.textContent = 'disconnected by the operator';
    } else if (state === 'closed') {
      const why = lastClose ? [lastClose.code, lastClose.reason].filter(Boolean).join(' ') : '';
      statusPill.textContent = why ? `closed · ${why}` : 'closed';
    } else if (state === 'authorizing' && tokenPrompt.waiters.length) {
      statusPill.textContent = 'waiting for a new token';
    } else {
      statusPill.textContent = STATE_TEXT[state] || state;
    }
  };
  render();
  if (state === 'reconnecting') statusTicker = setInterval(render, 100);
  $('detail').textContent = lastClose && lastClose.code && state !== 'open' ? closeDetail(lastClose) : '';
  if (state !== 'open') { showMembers(null); presence.reset(null, 'Not in the room right now.'); }
  $('toggle').textContent = state === 'closed' ? 'Connect' : 'Disconnect';
}

/** "Last close: 4003 (disconnected by the operator)", plus the server's reason when it
 *  says more than the code's meaning. */
function closeDetail({ code, reason }) {
  const meaning = closeCodeText(code);
  const extra = reason && reason !== meaning ? ` · “${reason}”` : '';
  return `Last close: ${code} (${meaning})${extra}`;
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
 * 5. Who you are: a token (signed: a verified user), or a guest's display name
 * ------------------------------------------------------------------------------- */
//
// Where the token comes from, first match wins:
//   #token-url=URL   the app's backend: GET URL answers with a fresh token as its body,
//                    fetched again whenever the server says the token expired (4001)
//   #token=TOKEN     a token given in the address, or pasted into the token field; kept
//                    in sessionStorage (this tab, until it is closed), and removed from
//                    the address bar so it is not bookmarked or shared by accident
// A server without --jwt-secret knows no users: there the page offers a display name
// instead (sent as ?name=), which everyone sees marked "unverified".

const TOKEN_KEY = 'threadcast.token';  // sessionStorage
const NAME_KEY = 'threadcast.name';    // localStorage: a guest keeps their name

const identity = {
  pasted: null,    // the token from #token= or the token field
  url: null,       // #token-url=
  current: null,   // the token the source gave last (what the connections use)
  fetched: 0,      // how many tokens were fetched from `url`
  guest: null,     // the guest display name
};

function storedItem(storage, key) {
  try { return storage.getItem(key); } catch { return null; }
}

function storeItem(storage, key, value) {
  try {
    if (value === null) storage.removeItem(key);
    else storage.setItem(key, value);
  } catch {
    // storage disabled: the value lasts until the page is reloaded
  }
}

/** Takes #token= and #token-url= from the address: the token into sessionStorage (and
 *  out of the address bar), the URL into `identity`. Returns true if the token changed. */
function readTokenFromAddress() {
  const params = hashParams();
  if (params.has('token-url')) identity.url = params.get('token-url') || null;
  if (params.has('name')) setGuestName(guestName(params.get('name')));
  if (!params.has('token')) return false;
  const token = params.get('token') || null;
  params.delete('token');
  // replaceState changes the address without a hashchange event or a new history entry.
  history.replaceState(null, '', location.pathname + location.search + (params.toString() ? '#' + params : ''));
  if (token === identity.pasted) return false;
  identity.pasted = token;
  storeItem(sessionStorage, TOKEN_KEY, token);
  return true;
}

function tokenInUse() {
  return Boolean(identity.url || identity.pasted);
}

/** A signed token names its holder; a shared --token names nobody. */
function signedTokenInUse() {
  return Boolean(identity.url || tokenClaims(identity.current || identity.pasted)?.sub);
}

/** GET the token URL: its text body is the token. A different origin must send
 *  Access-Control-Allow-Origin for this page. */
async function fetchToken(url) {
  const response = await fetch(url, { cache: 'no-store' });
  if (!response.ok) throw new Error(`token URL answered HTTP ${response.status}`);
  const token = (await response.text()).trim();
  if (!token) throw new Error('token URL answered with an empty body');
  identity.fetched += 1;
  return token;
}

/**
 * The token source every RoomConnection gets: asked before the first connect and
 * again whenever the server said the token expired. With a token URL it fetches a
 * fresh one each time; otherwise it gives the pasted token, and if that one has
 * expired it asks the user for a new one and waits.
 */
async function tokenSource() {
  let token;
  if (identity.url) {
    token = await fetchToken(identity.url);
  } else {
    while (identity.pasted && tokenExpired(identity.pasted)) {
      await askForToken('Your token has expired. Paste a new one to go on.');
    }
    token = identity.pasted;
  }
  identity.current = token;
  renderIdentity();
  return token;
}

/* The token field: shown while a token is needed, and to replace one. */

const tokenPrompt = { waiters: [] };

/** Shows `message` above the token field and resolves once the user gave a token. */
function askForToken(message) {
  $('token-prompt').textContent = message;
  $('token-prompt').hidden = false;
  renderIdentity();
  $('token-input').focus({ preventScroll: true });
  return new Promise((resolve) => {
    tokenPrompt.waiters.push(resolve);
    // While getting a token, the status pill now says "waiting for a new token".
    if (statusPill.dataset.state === 'authorizing') showStatus(main ? main.status() : AUTHORIZING);
  });
}

/** A new token from the field or the address: use it from now on, and reconnect (a
 *  resume: nothing is lost) so the server sees it. */
function useToken(token) {
  identity.pasted = token;
  storeItem(sessionStorage, TOKEN_KEY, token);
  $('token-prompt').hidden = true;
  for (const resolve of tokenPrompt.waiters.splice(0)) resolve();
  if (main) main.name = guestNameToSend();
  for (const connection of [main, feed]) if (connection) connection.reconnect({ freshToken: true });
  renderIdentity();
}

function forgetToken() {
  identity.pasted = null;
  identity.current = null;
  storeItem(sessionStorage, TOKEN_KEY, null);
  location.reload(); // start over as whoever the page is without a token
}

function setGuestName(name) {
  identity.guest = name;
  storeItem(localStorage, NAME_KEY, name);
}

/** Is the name field any use? Only where guests name themselves: /config.json says
 *  `"identity":"guest"` (no --jwt-secret: the zero-configuration demo; older servers
 *  do not say, then: no token required at all), and not while a signed token names us. */
function guestNamesOffered() {
  if (!config || signedTokenInUse()) return false;
  return config.identity ? config.identity === 'guest' : !config.token_required;
}

/** The guest name to send as ?name=, or null (the server would ignore it anyway where
 *  signed tokens name people). */
function guestNameToSend() {
  return guestNamesOffered() ? identity.guest : null;
}

/** The "You" line: who the server will take you for. */
function whoYouAre() {
  const claims = tokenClaims(identity.current || identity.pasted);
  if (claims && claims.sub) {
    const expires = typeof claims.exp === 'number'
      ? ` · token valid until ${new Date(claims.exp * 1000).toLocaleTimeString([], { hour12: false })}` : '';
    return { user: { sub: claims.sub, name: claims.name }, text: `signed in${expires}` };
  }
  if (guestNameToSend()) return { user: { name: identity.guest, unverified: true }, text: 'a guest: others see this name marked unverified' };
  if (tokenInUse()) return { user: null, text: 'with the shared token: anonymous' };
  return { user: null, text: 'anonymous' };
}

function renderIdentity() {
  const you = whoYouAre();
  const line = $('you');
  line.replaceChildren(el('span', 'you-label', 'You:'));
  const sender = senderElement(you.user);
  if (sender) line.append(sender);
  line.append(el('span', 'you-detail', you.text));
  line.dataset.verified = you.user && describeUser(you.user).verified ? 'true' : 'false';
  if (identity.url) line.append(el('span', 'you-detail', `· tokens fetched: ${identity.fetched}`));
  line.dataset.tokensFetched = identity.fetched;

  $('name-form').hidden = !guestNamesOffered();
  if (!$('name-form').hidden && document.activeElement !== $('name-input')) $('name-input').value = identity.guest || '';
  const needsTokenField = Boolean(config) && config.token_required && !identity.url;
  $('token-form').hidden = !needsTokenField;
  $('forget-token').hidden = !identity.pasted;
  presence.render();
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) return;
  $('token-input').value = '';
  useToken(token);
});

$('forget-token').addEventListener('click', forgetToken);

$('name-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = $('name-input').value;
  const name = text.trim() ? guestName(text) : null;
  if (text.trim() && !name) {
    systemLine('A display name is 1–32 characters, with no control characters.', 'error');
    return;
  }
  setGuestName(name);
  $('name-input').blur();
  // The server reads the name when a connection opens: reconnect (a resume) to use it.
  if (main) { main.name = guestNameToSend(); main.reconnect(); }
  renderIdentity();
});

/* ---------------------------------------------------------------------------------
 * 6. Who is here: the welcome's `users`, then join and leave frames
 * ------------------------------------------------------------------------------- */
//
// The server counts a user once however many tabs they have open, and sends `join`
// for their first connection and `leave` for their last, so the page just keeps the
// set. Above 100 members the welcome has no `users` (and no join/leave come): then
// only the member count is shown. Long-poll clients are not in presence at all.

const presence = {
  users: null,        // Map userKey -> user, or null when the server sent no list
  note: '',           // why there is no list

  /** A welcome: the full list (or none: `users` is absent). */
  reset(users, note = '') {
    this.users = Array.isArray(users) ? new Map(users.map((user) => [userKey(user), user])) : null;
    this.note = note;
    this.render();
  },

  change(type, user) {
    if (!this.users || !user) return;
    if (type === 'join') this.users.set(userKey(user), user);
    else this.users.delete(userKey(user));
    this.render();
  },

  render() {
    const list = $('people');
    const me = whoYouAre().user;
    const myKey = me ? userKey(me) : null;
    const users = this.users ? [...this.users.values()].filter(describeUser) : [];
    // Verified users first, then guests; by name within each.
    users.sort((a, b) => Number(Boolean(b.sub)) - Number(Boolean(a.sub))
      || describeUser(a).text.localeCompare(describeUser(b).text));
    list.replaceChildren(...users.map((user) => personElement(user, userKey(user) === myKey)));
    $('people-note').textContent = this.users && users.length === 0 ? 'Nobody with a name is here.' : this.note;
    $('people-count').textContent = this.users ? `${users.length} named` : '–';
  },
};

function personElement(user, isMe) {
  const shown = describeUser(user);
  const item = el('li', 'person ' + (shown.verified ? 'verified' : 'unverified') + (isMe ? ' me' : ''));
  item.dataset.key = userKey(user);
  item.append(senderElement(user));
  if (shown.verified && user.name && user.name !== user.sub) item.append(el('span', 'sub', user.sub));
  if (isMe) item.append(el('span', 'badge', 'you'));
  if (user.connections > 1) {
    const tabs = el('span', 'connections', `×${user.connections}`);
    tabs.title = `${user.connections} connections (tabs or devices)`;
    item.append(tabs);
  }
  return item;
}

/** What the welcome says about who is here. */
function presenceFromWelcome(header, transport) {
  if (Array.isArray(header.users)) return presence.reset(header.users);
  if (transport === 'poll') return presence.reset(null, 'Long polling is not counted in presence.');
  if (typeof header.members === 'number') return presence.reset(null, `${header.members} online: too many to list.`);
  return presence.reset(null, 'This server does not list who is here.');
}

/* ---------------------------------------------------------------------------------
 * 7. The room: join, switch, send
 * ------------------------------------------------------------------------------- */

const outbox = new Outbox();
for (const item of outbox.items) myClientIds.add(item.cid);
let config = null;
let main = null;
let feed = null;

function joinRoom(room) {
  if (main) main.stop('switching rooms');
  log.replaceChildren();
  $('room-name').textContent = room;
  $('room').value = room;
  document.title = `#${room} · threadcast`;
  presence.reset(null);
  $('people-room').textContent = room;
  main = new RoomConnection({
    room,
    wsBase: config.ws_url,
    token: tokenSource, // gives null while no token is in use
    name: guestNameToSend(),
    forced: forcedTransport,
    replay: true, // start with the room's recent history
    outbox,
    wsRetryMs,
    on: {
      status: showStatus,
      welcome(header, { changed, previous }) {
        presenceFromWelcome(header, main.kind);
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
      presence: (type, user) => presence.change(type, user),
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
  const hadUrl = identity.url;
  if (readTokenFromAddress()) useToken(identity.pasted); // a new #token=
  else if (identity.url !== hadUrl) { location.reload(); return; } // a new #token-url=
  const room = hashParams().get('room') || config.default_room || 'lobby';
  if (!ROOM_NAME.test(room)) { systemLine(`“${room}” is not a room name (1–64 of A-Z a-z 0-9 _ -).`, 'error'); return; }
  if (!main || room !== main.room) joinRoom(room);
});

$('toggle').addEventListener('click', () => {
  if (!main) return;
  if (main.state !== 'closed') { main.stop('closed by you'); return; }
  main.start();
  // After a disconnect by the operator (4003) the feed and the echo stopped too.
  if (feed && feed.stopped) feed.start();
  if (echo.stopped) echoConnect();
});

/* ---------------------------------------------------------------------------------
 * 8. Echo panel: a bare WebSocket to /echo, timing each round trip
 * ------------------------------------------------------------------------------- */

const echo = { socket: null, inFlight: [], waiting: [], counter: 0, attempt: 0, retry: null, stopped: false };

function echoStatus(state, text) {
  $('echo-status').dataset.state = state;
  $('echo-status').textContent = text;
}

function echoConnect() {
  clearTimeout(echo.retry);
  echo.stopped = false;
  echoStatus('connecting', 'connecting…');
  // The token the room connection got last: /echo only checks that it is valid.
  const token = identity.current;
  const socket = new WebSocket(config.ws_url + '/echo' + wsTokenQuery(token));
  echo.socket = socket;
  socket.addEventListener('open', () => {
    sendTokenFirst(socket, token);
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
    if (event.code === CLOSE_DISCONNECTED) {
      // The operator disconnected this user: stay away until the user presses Connect.
      echo.stopped = true;
      echoStatus('closed', 'disconnected by the operator');
      return;
    }
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
 * 9. Live feed panel: the demo feed room, as it arrives
 * ------------------------------------------------------------------------------- */

function startFeed() {
  const room = config.feed_room || 'ticker';
  $('feed-room').textContent = room;
  feed = new RoomConnection({
    room,
    wsBase: config.ws_url,
    token: tokenSource, // gives null while no token is in use
    name: null, // the feed is only read: no need to appear in its room as a guest
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
 * 10. Start: read /config.json (retrying until the server answers), then connect
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

/** Lesson mode (`?inspect=1`, docs/LESSONS.md): the inspector panel watches the room's
 *  WebSocket (not the feed's, not the echo's). Loaded only then: other visitors never
 *  fetch inspector.js. */
let inspector = null;

async function startInspector() {
  try {
    const { Inspector } = await import('./inspector.js');
    inspector = new Inspector($('inspector'), { wants: (room) => Boolean(main) && room === main.room });
    inspectWebSockets(inspector);
    document.body.classList.add('inspecting');
  } catch (error) {
    systemLine(`The inspector could not be loaded (${error.message}).`, 'error');
  }
}

async function start() {
  identity.pasted = storedItem(sessionStorage, TOKEN_KEY);
  identity.guest = guestName(storedItem(localStorage, NAME_KEY));
  readTokenFromAddress();
  if (query.get('inspect') === '1') await startInspector();
  config = await loadConfig();
  if (config.auth === 'first-message') useFirstMessageAuth();
  renderIdentity();
  if (config.token_required && !tokenInUse()) {
    showStatus({ state: 'closed', label: '–', lastClose: { code: null, reason: 'token required' } });
    systemLine('This server needs a token: paste one under “You”, or open the page as …/#token=YOUR_TOKEN (the page sends it as ?token=).', 'error');
    await askForToken('This server needs a token. Paste one here.');
  }
  // Get the first token before anything connects (the Echo panel uses it too).
  if (tokenInUse()) {
    showStatus(AUTHORIZING);
    try {
      await tokenSource();
    } catch (error) {
      systemLine(`Could not get a token (${error.message}): the room will keep trying.`, 'error');
    }
  }
  const room = hashParams().get('room') || config.default_room || 'lobby';
  joinRoom(ROOM_NAME.test(room) ? room : 'lobby');
  startFeed();
  echoConnect();
  // The browser noticed the network is back: do not wait out the backoff.
  window.addEventListener('online', () => {
    main.retryNow();
    feed.retryNow();
    if (!echo.socket && !echo.stopped) echoConnect();
  });
  // For the curious: in the console, `threadcast.main.lastId`, `threadcast.outbox.items`.
  window.threadcast = { get main() { return main; }, get feed() { return feed; }, outbox, identity, presence, get inspector() { return inspector; } };
}

start();
