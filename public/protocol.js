// protocol.js: threadcast's wire format (docs/PROTOCOL.md) as small, pure functions.
//
// Every frame the server sends on /ws/<room> is a *header line* (one line of JSON), then
// "\n", then the payload exactly as it was published:
//
//   {"type":"message","id":42,"epoch":"9f1c2a7b3e4d5f60","ts":1763870000123,"cid":"m-17"}\nhello, room
//
// A text message arrives in a text frame (a JS string), a binary message in a binary
// frame (an ArrayBuffer, because we set `socket.binaryType = 'arraybuffer'`). Control
// frames (welcome, gap, ack, members) are a header line with nothing after it.

/** Room names: 1 to 64 characters of A-Z a-z 0-9 _ - (the same rule as the server). */
export const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

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

/** What a WebSocket close code means, in a few words (RFC 6455 section 7.4). */
export function closeCodeText(code) {
  const meanings = {
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
