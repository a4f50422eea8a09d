// protocol.js: threadcast's wire format (docs/PROTOCOL.md) as small, pure functions.
//
// Every frame the server sends on /ws/<room> is a *header line* (one line of JSON), then
// "\n", then the payload exactly as it was published:
//
//   {"type":"message","id":42,"epoch":"9f1c2a7b3e4d5f60","ts":1763870000123,"cid":"m-17"}\nhello, room
//
// A text message arrives in a text frame (a JS string), a binary message in a binary
// frame (an ArrayBuffer, because we set `socket.binaryType = 'arraybuffer'`). Control
// frames (welcome, gap, ack, members, join, leave, error) are a header line with
// nothing after it.

/** Room names: 1 to 64 characters of A-Z a-z 0-9 _ - (the same rule as the server), or
 *  a personal room: `@` and its owner's user id (64 characters in all). */
export const ROOM_NAME = /^(?:[A-Za-z0-9_-]{1,64}|@[A-Za-z0-9_-]{1,63})$/;

/** A room's name as it goes in a URL path: the server reads the path as it is (no
 *  percent-decoding), so a personal room's `@` must stay `@`. */
export function roomPath(room) {
  return encodeURIComponent(room).replace(/^%40/, '@');
}

const NEWLINE = 0x0a;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/**
 * Splits one WebSocket frame into { header, payload }.
 * `data` is a string (text frame) or an ArrayBuffer (binary frame); the payload keeps
 * the frame's type: a string, or a Uint8Array of the bytes after the first 0x0A.
 * Throws if the first line is not JSON (e.g. a server in raw mode).
 */
export function parseFrame(data) {
  if (typeof data === 'string') {
    const cut = data.indexOf('\n');
    const headerText = cut < 0 ? data : data.slice(0, cut);
    return { header: JSON.parse(headerText), payload: cut < 0 ? '' : data.slice(cut + 1) };
  }
  const bytes = new Uint8Array(data);
  const cut = bytes.indexOf(NEWLINE);
  const headerText = fromUtf8.decode(cut < 0 ? bytes : bytes.subarray(0, cut));
  return { header: JSON.parse(headerText), payload: cut < 0 ? new Uint8Array(0) : bytes.slice(cut + 1) };
}

/**
 * SSE events and long-poll answers carry a message as one JSON object: the header
 * fields plus `data` (text as a string; binary as base64, with type "binary").
 * This turns one into the same { header, payload } shape parseFrame returns.
 */
export function fromJsonMessage(object) {
  const { data, ...header } = object;
  if (object.type === 'binary') {
    return { header: { ...header, type: 'message' }, payload: base64ToBytes(data) };
  }
  return { header, payload: data };
}

/**
 * What a client sends to get exactly-once delivery: the line `cid:<id>` in front of the
 * payload. The server strips it, remembers the id, and drops a repeat (answering with
 * an `ack` whose `duplicate` is true). A Uint8Array payload stays binary.
 */
export function withClientId(cid, payload) {
  const prefix = 'cid:' + cid + '\n';
  if (typeof payload === 'string') return prefix + payload;
  const head = utf8.encode(prefix);
  const frame = new Uint8Array(head.length + payload.length);
  frame.set(head, 0);
  frame.set(payload, head.length);
  return frame;
}

/** A fresh client message id: "c" + 20 random base-32 characters (crypto.getRandomValues
 *  works on plain http too, unlike crypto.randomUUID). */
export function newClientId() {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  const random = crypto.getRandomValues(new Uint8Array(20));
  let id = 'c';
  for (const byte of random) id += alphabet[byte & 31];
  return id;
}

/** "00 01 02 ff …": the first `max` bytes in hex, for showing binary messages. */
export function hexPreview(bytes, max = 24) {
  const shown = Array.from(bytes.subarray(0, max), (b) => b.toString(16).padStart(2, '0'));
  return shown.join(' ') + (bytes.length > max ? ' …' : '');
}

/** "1 byte", "5 bytes", "1,024 bytes". */
export function sizeLabel(n) {
  return n.toLocaleString('en-US') + (n === 1 ? ' byte' : ' bytes');
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function bytesToBase64(bytes) {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/* Close codes of threadcast's own (docs/PROTOCOL.md, "Close codes of our own") ---- */

export const CLOSE_TOKEN_EXPIRED = 4001;  // ask the token source for a fresh one, reconnect
export const CLOSE_DISCONNECTED = 4003;   // by the operator: do NOT reconnect by ourselves
export const CLOSE_ROOM_DELETED = 4004;   // by the operator: reconnect, to a new empty room

/** What a WebSocket close code means, in a few words (RFC 6455 section 7.4, and
 *  threadcast's own 4000–4999). */
export function closeCodeText(code) {
  const meanings = {
    [CLOSE_TOKEN_EXPIRED]: 'token expired',
    [CLOSE_DISCONNECTED]: 'disconnected by the operator',
    [CLOSE_ROOM_DELETED]: 'room deleted by the operator',
    1000: 'normal closure',
    1001: 'going away: the server is shutting down',
    1006: 'connection lost, no close frame',
    1008: 'policy violation, e.g. too slow to keep up',
    1009: 'message too big',
    1011: 'server error',
    1012: 'service restart',
    1013: 'try again later',
  };
  return meanings[code] || 'code ' + code;
}

/** An SSE `event: close` carries `{"type":"close","code":4001,"reason":"…"}`; older
 *  servers sent plain text (at shutdown). Either way: { code, reason }. */
export function parseCloseEvent(data, fallbackCode = 1001) {
  try {
    const object = JSON.parse(data);
    if (object && typeof object.code === 'number') return { code: object.code, reason: String(object.reason || '') };
  } catch {
    // plain text: the reason itself
  }
  return { code: fallbackCode, reason: String(data || '') };
}

/* Who sent a message, and who is in a room ------------------------------------------- */
//
// The server puts `from` in a room message's header, from the publisher's token:
//   {"sub":"alice","name":"Alice"}         a signed token: a verified user
//   {"name":"Bob","unverified":true}       a guest's ?name= (no sub: anyone can type it)
//   absent                                 the shared token, no token, a backend, a feed
// Presence (the welcome's `users`, join and leave frames) names users the same way.

/** Is this `from` (or presence user) a verified user? Only a `sub` says so, and never
 *  together with `unverified`. */
export function isVerified(user) {
  return Boolean(user && typeof user.sub === 'string' && user.sub && !user.unverified);
}

/**
 * How to show a sender or a present user: { text, verified, title }, or null when
 * `user` names nobody. A verified user shows their name (or their sub when the token
 * has no name); a guest's name always says "(unverified)", so a guest who types
 * "Alice" can never pass for the verified Alice.
 */
export function describeUser(user) {
  if (!user || typeof user !== 'object') return null;
  if (isVerified(user)) {
    const name = typeof user.name === 'string' && user.name ? user.name : user.sub;
    return { text: name, verified: true, title: `verified user “${user.sub}”` };
  }
  if (typeof user.name === 'string' && user.name) {
    return { text: `${user.name} (unverified)`, verified: false, title: 'a display name the sender chose: not verified' };
  }
  return null;
}

/** One key per person, as the server groups them: verified users by sub, guests by
 *  name (in a namespace of their own, so guest "alice" is not user "alice"). */
export function userKey(user) {
  return isVerified(user) ? 'user:' + user.sub : 'guest:' + (user.name || '');
}

/* Signed tokens (HS256 JWT) ------------------------------------------------------------ */
//
// The page never verifies a token (it has no secret; the server does that). It only
// reads the claims to show who you are and to notice an expired token before the
// server refuses it.

/** Seconds the server still accepts a token after its `exp` (docs/PROTOCOL.md). */
export const TOKEN_LEEWAY_S = 30;

/** The claims of a JWT ({ sub, name, exp, … }), or null if `token` is not one (a
 *  shared --token is just a string). */
export function tokenClaims(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = fromUtf8.decode(base64ToBytes(base64 + '='.repeat((4 - base64.length % 4) % 4)));
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/** Whether the server would refuse `token` as expired at `nowMs` (its `exp` plus the
 *  server's leeway has passed). A token without `exp` (or not a JWT) never expires here. */
export function tokenExpired(token, nowMs = Date.now()) {
  const claims = tokenClaims(token);
  if (!claims || typeof claims.exp !== 'number') return false;
  return nowMs / 1000 >= claims.exp + TOKEN_LEEWAY_S;
}

/** A guest display name the server takes with ?name=: 1–32 characters, no control
 *  characters. Returns the trimmed name, or null. */
export function guestName(text) {
  const name = String(text || '').trim();
  if (!name || [...name].length > 32 || /[\u0000-\u001f\u007f-\u009f]/.test(name)) return null;
  return name;
}
