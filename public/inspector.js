// inspector.js: lesson mode (issue 17). Open the page as `…/?inspect=1` and its room
// WebSocket is opened with `?inspect=1` too; the server then also sends, on that same
// connection, what it sees of it (docs/PROTOCOL.md, "Lesson mode: the inspector"):
//
//   {"type":"inspect","event":"handshake", request, response, accept:{key,guid,concatenated,sha1,base64}}
//   {"type":"inspect","event":"thread", role, tid, pid, state}
//   {"type":"inspect","event":"frame", dir, fin, rsv, opcode, kind, masked, mask, len, len_bits,
//                                      preview, unmasked, close_code, close_reason, words}
//   {"type":"inspect","event":"figures", queue, rtt_micros, bytes_in, bytes_out, messages_in, messages_out}
//   {"type":"inspect","event":"dropped", count}
//
// They are control frames (a header line and nothing after it), not room messages:
// transports.js hands them here and never to the chat. This panel shows them, plus what
// only the page can see (it opened a socket, it started a close, the `close` event).
//
// The first half of this file is pure functions (tested in Node by
// tests/browser/inspector.test.js); the second half is the panel. Every text is set
// with textContent: the server's words and a peer's bytes never become markup.

import { closeCodeText } from './protocol.js';

/** RFC 6455 §1.3: the GUID every server appends to the client's key. */
export const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** How many rows the frame list keeps (older ones are dropped from the top). */
export const MAX_ROWS = 300;

const OPCODES = { 0: 'continuation', 1: 'text', 2: 'binary', 8: 'close', 9: 'ping', 10: 'pong' };

/** "text", "ping", …, or "reserved" for the opcodes RFC 6455 leaves unused. */
export function opcodeName(opcode) {
  return OPCODES[opcode] || 'reserved';
}

/** The length encoding a payload of `len` bytes needs: 7, 16 or 64 (bits). */
export function lengthBits(len) {
  if (len <= 125) return 7;
  if (len <= 0xffff) return 16;
  return 64;
}

/** In words: where the length sits in the header. */
export function lengthEncodingText(bits) {
  if (bits === 7) return '7-bit: the length is in the second byte (0–125)';
  if (bits === 16) return '16-bit: 126, then the length in the next 2 bytes (126–65,535)';
  return '64-bit: 127, then the length in the next 8 bytes (65,536 and up)';
}

/** "7f9f4d5158", "7f 9f 4d", "7F:9F" → ["7f", "9f", …]. */
export function hexBytes(hex) {
  const digits = String(hex || '').toLowerCase().replace(/[^0-9a-f]/g, '');
  const bytes = [];
  for (let i = 0; i + 1 < digits.length; i += 2) bytes.push(digits.slice(i, i + 2));
  return bytes;
}

/** "48 65 6c 6c 6f". */
export function spacedHex(hex) {
  return hexBytes(hex).join(' ');
}

/** The bytes as characters where they are printable ASCII, "·" elsewhere. */
export function printable(hex) {
  return hexBytes(hex).map((b) => {
    const code = parseInt(b, 16);
    return code >= 0x20 && code < 0x7f ? String.fromCharCode(code) : '·';
  }).join('');
}

/** XORs `hex` with the 4-byte masking key, byte i with key[i % 4]: masking and
 *  unmasking are the same operation. */
export function xorMask(hex, maskHex) {
  const key = hexBytes(maskHex).map((b) => parseInt(b, 16));
  if (key.length !== 4) return spacedHex(hex);
  return hexBytes(hex)
    .map((b, i) => (parseInt(b, 16) ^ key[i % 4]).toString(16).padStart(2, '0'))
    .join(' ');
}

/**
 * The frame's header bytes, rebuilt from the event's fields: byte 0 is FIN, RSV1–3 and
 * the opcode; byte 1 is MASK and the 7-bit length (or 126 / 127), then the extended
 * length. The masking key (when MASK is 1) follows them on the wire. Returns hex strings.
 */
export function headerBytes(frame) {
  const rsv = Array.isArray(frame.rsv) ? frame.rsv : [false, false, false];
  const b0 = (frame.fin ? 0x80 : 0) | (rsv[0] ? 0x40 : 0) | (rsv[1] ? 0x20 : 0) | (rsv[2] ? 0x10 : 0) | (frame.opcode & 0x0f);
  const bits = frame.len_bits || lengthBits(frame.len);
  const len = Number(frame.len) || 0;
  const b1 = (frame.masked ? 0x80 : 0) | (bits === 7 ? len : bits === 16 ? 126 : 127);
  const bytes = [b0, b1];
  if (bits === 16) bytes.push((len >> 8) & 0xff, len & 0xff);
  if (bits === 64) {
    for (let shift = 7; shift >= 0; shift--) bytes.push(Math.floor(len / 2 ** (8 * shift)) % 256);
  }
  return bytes.map((b) => b.toString(16).padStart(2, '0'));
}

/** Who sent a frame: `in` was read from the client (this page), `out` written by the server. */
export function directionText(dir) {
  return dir === 'in' ? 'client → server' : 'server → client';
}

/** Who started a close, from the direction of the first close frame. */
export function closeStarter(dir) {
  return dir === 'in' ? 'the client (this page)' : 'the server';
}

/** Request or response lines: the server may send an array of lines or one string. */
export function toLines(value) {
  if (Array.isArray(value)) return value.map(String);
  return String(value || '').split(/\r?\n/).filter((line) => line !== '');
}

/** The value of header `name` in a list of lines (case-insensitive), or null. */
export function headerValue(lines, name) {
  const prefix = name.toLowerCase() + ':';
  const line = toLines(lines).find((l) => l.toLowerCase().startsWith(prefix));
  return line === undefined ? null : line.slice(prefix.length).trim();
}

/** "0.21 ms", "12 ms". */
export function millis(micros) {
  if (typeof micros !== 'number') return '–';
  const ms = micros / 1000;
  return (ms < 10 ? ms.toFixed(2) : ms.toFixed(0)) + ' ms';
}

/** "1,234". */
export function count(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : '–';
}

/** A text of exactly `n` ASCII bytes to send: "hello" for 5, else a ruler that says
 *  how long it is ("126 bytes: 0123456789…"), so the chat shows what it was. */
export function lessonText(n) {
  if (n === 5) return 'hello';
  const head = `${n.toLocaleString('en-US')} bytes: `;
  let text = head;
  while (text.length < n) text += '0123456789';
  return text.slice(0, n);
}

/** The binary lesson payload: 00 01 02 … 0f. Masked, its first bytes are almost the
 *  masking key itself (x ^ 0 = x): a good thing to notice. */
export function lessonBytes() {
  return Uint8Array.from({ length: 16 }, (_, i) => i);
}

/** SHA-1 and base64 of key + GUID, computed by this page (null where the browser has no
 *  crypto.subtle: pages not on https or localhost). */
export async function computeAccept(key) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle || !key) return null;
  const digest = new Uint8Array(await subtle.digest('SHA-1', new TextEncoder().encode(key + WEBSOCKET_GUID)));
  const sha1 = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
  return { sha1, base64: btoa(String.fromCharCode(...digest)) };
}

/* ------------------------------------------------------------------------------------
 * The panel
 * ---------------------------------------------------------------------------------- */

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** A labelled value: <span class="kv"><span class="k">label</span><span class="v">value</span></span>. */
function kv(label, value, className = '') {
  const node = el('span', 'kv ' + className);
  node.append(el('span', 'k', label), el('span', 'v', value));
  return node;
}

function clock() {
  const now = new Date();
  return now.toLocaleTimeString([], { hour12: false }) + '.' + String(now.getMilliseconds()).padStart(3, '0');
}

export class Inspector {
  /**
   * root:  the (empty) <section> to build the panel in
   * wants: (room) => whether the WebSocket being opened for `room` is the one to inspect
   */
  constructor(root, { wants = () => true } = {}) {
    this.root = root;
    this.wants = wants;
    this.socket = null;        // the newest inspected WebSocket
    this.connections = 0;      // how many sockets were inspected so far
    this.rows = 0;             // rows added (the row number)
    this.closing = new WeakMap(); // socket -> { code, reason } when the page started its close
    this.firstClose = new WeakMap(); // socket -> the dir of the first close frame the server reported
    this.wasOpen = new WeakSet(); // sockets whose handshake succeeded
    this.threads = {};
    this.dropped = 0;
    this.build();
  }

  /* Building ------------------------------------------------------------------------ */

  build() {
    const root = this.root;
    root.hidden = false;
    root.replaceChildren();
    const head = el('div', 'card-head');
    const title = el('h2', '', 'Inspector');
    title.id = 'inspector-title';
    this.state = el('span', 'dot-label', 'waiting for the socket');
    this.state.id = 'insp-state';
    this.state.dataset.state = 'connecting';
    head.append(title, this.state);
    root.setAttribute('aria-labelledby', 'inspector-title');

    const hint = el('p', 'hint', 'What the server saw and did on this page’s room WebSocket: the handshake, '
      + 'every frame read (→ in, from this page) and written (← out, from the server), and its two threads. '
      + 'Lessons: docs/LESSONS.md.');

    const tools = el('div', 'insp-tools');
    tools.setAttribute('role', 'group');
    tools.setAttribute('aria-label', 'Try it');
    const button = (id, label, title, action) => {
      const b = el('button', 'secondary', label);
      b.type = 'button';
      b.id = id;
      b.title = title;
      b.addEventListener('click', action);
      tools.append(b);
      return b;
    };
    for (const n of [5, 125, 126, 70000]) {
      button(`insp-send-${n}`, `Send ${n.toLocaleString('en-US')} B`,
        `One text message of exactly ${n.toLocaleString('en-US')} bytes, straight on the socket (no cid line)`,
        () => this.sendText(n));
    }
    button('insp-send-binary', 'Send binary', 'One binary message: the 16 bytes 00 01 02 … 0f', () => this.sendBinary());
    button('insp-close', 'Close from the page', 'socket.close(1000): the page starts the close handshake (the page then reconnects)',
      () => this.closeFromPage());
    button('insp-clear', 'Clear', 'Empty the frame list', () => this.clear());
    this.toolNote = el('p', 'insp-note');
    this.toolNote.id = 'insp-note';
    this.toolNote.setAttribute('aria-live', 'polite');

    // Handshake
    const handshake = el('details', 'insp-block insp-handshake');
    handshake.open = true;
    handshake.id = 'insp-handshake';
    handshake.append(el('summary', '', 'Opening handshake'));
    this.handshakeBody = el('div', 'insp-body');
    this.handshakeBody.append(el('p', 'hint', 'Not yet: it shows once the server has answered the upgrade.'));
    handshake.append(this.handshakeBody);

    // Threads and figures, side by side
    const grid = el('div', 'insp-grid');
    const threads = el('div', 'insp-block insp-threads');
    threads.id = 'insp-threads';
    threads.append(el('h3', '', 'Threads'));
    this.threadsBody = el('div', 'insp-body');
    this.threadsBody.append(el('p', 'hint', 'The reader and the writer report when they start.'));
    threads.append(this.threadsBody);
    const figures = el('div', 'insp-block insp-figures');
    figures.id = 'insp-figures';
    figures.append(el('h3', '', 'Figures'));
    this.figuresBody = el('dl', 'insp-figs');
    this.figure = {};
    for (const [key, label] of [['queue', 'writer queue'], ['rtt', 'ping RTT'], ['bytes_in', 'bytes in'],
      ['bytes_out', 'bytes out'], ['messages_in', 'messages in'], ['messages_out', 'messages out'], ['dropped', 'events dropped']]) {
      const dt = el('dt', '', label);
      const dd = el('dd', '', '–');
      dd.dataset.figure = key;
      this.figure[key] = dd;
      this.figuresBody.append(dt, dd);
    }
    figures.append(this.figuresBody, el('p', 'hint insp-fig-hint', 'Updated after each pong: the server pings every --ping-interval (20 s unless set).'));
    grid.append(threads, figures);

    // Frames
    const framesHead = el('div', 'insp-frames-head');
    framesHead.append(el('h3', '', 'Frames'), el('span', 'hint', `the last ${MAX_ROWS}, oldest first`));
    this.list = el('ol', 'insp-frames');
    this.list.id = 'insp-frames';
    this.list.setAttribute('aria-label', 'Frames and events, in order');

    root.append(head, hint, tools, this.toolNote, handshake, grid, framesHead, this.list);
  }

  /* Hooks called by transports.js ---------------------------------------------------- */

  /** A room WebSocket is being opened with ?inspect=1. */
  opened(socket, url) {
    this.socket = socket;
    this.connections += 1;
    this.threads = {};
    this.setState('connecting', `connection ${this.connections}: handshake…`);
    const shownUrl = url.replace(/([?&]token=)[^&]*/, '$1[redacted]');
    this.addNote('open', 'page', `new WebSocket("${shownUrl}")`,
      `Connection ${this.connections}: the browser sends the HTTP upgrade request.`);
    socket.addEventListener('open', () => {
      this.wasOpen.add(socket);
      if (this.socket !== socket) return;
      this.setState('open', `connection ${this.connections}: open`);
    });
  }

  /** The page is closing `socket` itself (Disconnect, switching rooms, reconnecting). */
  pageClosing(socket, code, reason) {
    if (this.closing.has(socket)) return;
    this.closing.set(socket, { code, reason });
    this.addNote('close', 'page', `socket.close(${code}${reason ? `, "${reason}"` : ''})`,
      'The client (this page) starts the close handshake: the browser sends a masked close frame and waits for the server’s.',
      { dir: 'in', closeCode: code, starter: 'client' });
  }

  /** The browser's `close` event: the connection is over. */
  closed(socket, event) {
    const byPage = this.closing.has(socket);
    const starter = byPage ? 'client' : event.code === 1006 ? 'nobody' : 'server';
    const who = {
      client: 'Started by the client (this page); the code is the one the server answered with.',
      server: 'Started by the server.',
      nobody: 'No close frame: the connection was lost or refused (1006 never travels in a frame).',
    }[starter];
    // Close frames never show as server rows: after sending its own close frame the
    // server may send nothing (not even an inspect frame), and once the page has
    // started closing the browser delivers no more messages.
    const why = starter === 'nobody' ? '' : ' The close frames themselves cannot be reported on this socket: nothing may follow a close frame.';
    this.addNote('closed', 'page', `close event: ${event.code} ${closeCodeText(event.code)}${event.reason ? ` · “${event.reason}”` : ''}`,
      `${who} ${event.wasClean ? 'A clean close handshake.' : 'Not clean.'}${why}`,
      { closeCode: event.code, starter });
    if (this.socket === socket) this.setState('closed', `connection ${this.connections}: closed ${event.code}`);
    if (!this.wasOpen.has(socket) && event.code === 1006 && this.socket === socket) {
      this.note('The WebSocket closed before it opened: the handshake failed. The inspector is allowed on a loopback '
        + 'listener, elsewhere only with --allow-inspect (else the server answers 403).');
    }
  }

  /** One inspect frame from the server. */
  event(message) {
    switch (message.event) {
      case 'handshake': return this.showHandshake(message);
      case 'thread': return this.showThread(message);
      case 'frame': return this.showFrame(message);
      case 'figures': return this.showFigures(message);
      case 'dropped': return this.showDropped(message);
      default: return undefined; // a newer server's event: ignore it
    }
  }

  /* The lesson buttons -------------------------------------------------------------- */

  openSocket() {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      this.note('The room WebSocket is not open right now (see the status at the top).');
      return null;
    }
    return socket;
  }

  sendText(n) {
    const socket = this.openSocket();
    if (!socket) return;
    socket.send(lessonText(n));
    this.note(`Sent a text message of ${n.toLocaleString('en-US')} bytes: watch the → in frame, then the room's copy ← out.`);
  }

  sendBinary() {
    const socket = this.openSocket();
    if (!socket) return;
    socket.send(lessonBytes());
    this.note('Sent 16 bytes (00 01 … 0f) as one binary message.');
  }

  closeFromPage() {
    const socket = this.openSocket();
    if (!socket) return;
    this.pageClosing(socket, 1000, 'closed from the inspector');
    socket.close(1000, 'closed from the inspector');
    this.note('Closed from the page with 1000; the page reconnects by itself, with a new handshake and new threads.');
  }

  clear() {
    this.list.replaceChildren();
  }

  note(text) {
    this.toolNote.textContent = text;
  }

  setState(state, text) {
    this.state.dataset.state = state;
    this.state.textContent = text;
  }

  /* Rendering the server's events --------------------------------------------------- */

  showHandshake(h) {
    const request = toLines(h.request);
    const response = toLines(h.response);
    const accept = h.accept || {};
    const answered = headerValue(response, 'Sec-WebSocket-Accept');
    const sentKey = headerValue(request, 'Sec-WebSocket-Key');
    const body = this.handshakeBody;
    body.replaceChildren();

    const pair = el('div', 'insp-http');
    const requestBox = el('div', 'insp-http-box');
    requestBox.append(el('h4', '', 'Request, as received'), el('pre', 'insp-pre insp-request', request.join('\n')));
    const responseBox = el('div', 'insp-http-box');
    responseBox.append(el('h4', '', 'Response, as answered'), el('pre', 'insp-pre insp-response', response.join('\n')));
    pair.append(requestBox, responseBox);

    const steps = el('ol', 'insp-steps');
    steps.id = 'insp-accept';
    const step = (label, value, name) => {
      const item = el('li');
      item.append(el('span', 'k', label), el('code', 'v', value));
      item.dataset.step = name;
      steps.append(item);
      return item;
    };
    step('Sec-WebSocket-Key (16 random bytes, base64)', accept.key, 'key');
    step('+ the GUID of RFC 6455', accept.guid || WEBSOCKET_GUID, 'guid');
    step('= concatenated', accept.concatenated, 'concatenated');
    step('SHA-1 of that (20 bytes, hex)', spacedHex(accept.sha1), 'sha1');
    step('base64 of the 20 bytes', accept.base64, 'base64');
    const matches = Boolean(accept.base64) && answered === accept.base64;
    const check = step('Sec-WebSocket-Accept in the 101', answered ?? '(missing)', 'answered');
    check.append(el('span', 'insp-check ' + (matches ? 'ok' : 'bad'), matches ? '✓ matches' : '✗ does not match'));
    check.dataset.matches = String(matches);
    if (sentKey && accept.key && sentKey !== accept.key) {
      steps.append(el('li', 'insp-check bad', `✗ the request's key was ${sentKey}`));
    }
    const mine = step('checked by this page (crypto.subtle)', '…', 'page');
    computeAccept(accept.key).then((computed) => {
      const value = mine.querySelector('.v');
      if (!computed) { value.textContent = 'not available here (needs https or localhost)'; return; }
      const same = computed.base64 === accept.base64;
      value.textContent = computed.base64;
      mine.append(el('span', 'insp-check ' + (same ? 'ok' : 'bad'), same ? '✓ the same' : '✗ differs'));
      mine.dataset.matches = String(same);
    }).catch(() => {});

    body.append(pair, el('h4', '', 'Sec-WebSocket-Accept, step by step'), steps);
    const status = response[0] || '';
    this.addNote('handshake', 'server', `${request[0] || 'GET'} → ${status}`,
      matches ? 'The server answered the upgrade; its Sec-WebSocket-Accept proves it read this key.'
        : 'The server answered the upgrade.');
  }

  showThread(t) {
    this.threads[t.role] = t;
    if (t.pid) this.threads.pid = t.pid;
    const body = this.threadsBody;
    body.replaceChildren();
    const table = el('dl', 'insp-figs');
    const pid = this.threads.pid;
    table.append(el('dt', '', 'process'), Object.assign(el('dd', '', pid ?? '–'), { id: 'insp-pid' }));
    for (const role of ['reader', 'writer']) {
      const info = this.threads[role];
      const dd = el('dd', 'insp-thread', info ? `tid ${info.tid} · ${info.state}` : '–');
      dd.dataset.role = role;
      if (info) { dd.dataset.tid = info.tid; dd.dataset.state = info.state; }
      table.append(el('dt', '', role === 'reader' ? 'reader' : 'writer'), dd);
    }
    body.append(table);
    if (pid) {
      const watch = el('p', 'insp-watch');
      watch.append('Watch them live: ', el('code', '', `top -H -p ${pid}`), ' or ', el('code', '', `ps -L -p ${pid}`));
      body.append(watch, el('p', 'hint', 'The reader is named conn (it read the request first), the writer ws-write-<id>.'));
    }
    const row = this.addNote('thread', 'server', `${t.role} thread ${t.state}: tid ${t.tid}`,
      t.role === 'reader'
        ? 'The reader blocks in read() and is the only one that reads this socket.'
        : 'The writer sleeps on its queue and is the only one that writes this socket.');
    row.dataset.tid = t.tid;
    row.dataset.role = t.role;
  }

  showFigures(f) {
    const set = (key, text) => { this.figure[key].textContent = text; };
    set('queue', count(f.queue));
    set('rtt', millis(f.rtt_micros));
    set('bytes_in', count(f.bytes_in));
    set('bytes_out', count(f.bytes_out));
    set('messages_in', count(f.messages_in));
    set('messages_out', count(f.messages_out));
    this.figure.rtt.dataset.micros = f.rtt_micros ?? '';
  }

  showDropped(d) {
    this.dropped += Number(d.count) || 0;
    this.figure.dropped.textContent = count(this.dropped);
    this.addNote('dropped', 'server', `${count(d.count)} events dropped`,
      'The inspector fell behind: the server’s queue for this connection was full, so these events were not sent.');
  }

  showFrame(f) {
    const kind = f.kind || opcodeName(f.opcode);
    const row = this.row('frame', 'server');
    const bits = f.len_bits || lengthBits(f.len);
    Object.assign(row.dataset, {
      dir: f.dir, kind, opcode: f.opcode, len: f.len, lenBits: bits, masked: String(Boolean(f.masked)), fin: String(Boolean(f.fin)),
    });
    if (f.close_code !== undefined && f.close_code !== null) row.dataset.closeCode = f.close_code;

    const top = el('div', 'insp-line insp-top');
    top.append(
      el('span', 'insp-dir ' + f.dir, f.dir === 'in' ? '→ in' : '← out'),
      el('span', 'insp-kind kind-' + kind, `${kind} · opcode ${f.opcode}`),
      el('span', 'insp-len', `${count(f.len)} B · ${bits}-bit length`),
      el('span', 'insp-who', directionText(f.dir)),
      el('time', 'insp-time', clock()),
    );
    top.querySelector('.insp-len').title = lengthEncodingText(bits);

    const rsv = Array.isArray(f.rsv) ? f.rsv : [false, false, false];
    const bitsLine = el('div', 'insp-line insp-bits');
    bitsLine.append(
      kv('FIN', f.fin ? '1' : '0', 'fin'),
      kv('RSV1-3', rsv.map((b) => (b ? '1' : '0')).join(' '), 'rsv'),
      kv('opcode', '0x' + Number(f.opcode).toString(16), 'opcode'),
      kv('MASK', f.masked ? '1' : '0', 'mask-bit'),
    );
    if (f.masked) bitsLine.append(kv('key', spacedHex(f.mask), 'mask'));
    bitsLine.append(kv('header', headerBytes(f).join(' ') + (f.masked ? ' + key' : ''), 'header'));

    const lines = [top, bitsLine];
    if (f.preview) {
      const bytes = el('div', 'insp-line insp-bytes');
      if (f.masked) {
        bytes.append(kv('on the wire (masked)', spacedHex(f.preview), 'preview'));
        bytes.append(kv('unmasked', spacedHex(f.unmasked ?? xorMask(f.preview, f.mask)), 'unmasked'));
      } else {
        bytes.append(kv('payload', spacedHex(f.preview), 'preview'));
      }
      const text = printable(f.unmasked ?? f.preview);
      if (kind !== 'binary') bytes.append(kv('as text', text + (hexBytes(f.preview).length < f.len ? '…' : ''), 'ascii'));
      lines.push(bytes);
    }
    if (kind === 'close') {
      const code = f.close_code;
      const closeLine = el('div', 'insp-line insp-close');
      closeLine.append(
        kv('close', code === undefined || code === null ? 'no code (1005)' : `${code} ${closeCodeText(code)}`, 'code'),
        kv('started by', this.closeStarterFor(f), 'starter'),
      );
      if (f.close_reason) closeLine.append(kv('reason', `“${f.close_reason}”`, 'reason'));
      lines.push(closeLine);
    }
    if (f.words) lines.push(el('div', 'insp-line insp-words', f.words));
    row.append(...lines);
    this.append(row);
  }

  /** The first close frame on a connection started the close; a second one answers it. */
  closeStarterFor(frame) {
    const socket = this.socket;
    const first = this.firstClose.get(socket);
    if (first === undefined) {
      this.firstClose.set(socket, frame.dir);
      return closeStarter(frame.dir);
    }
    return `${closeStarter(first)} (this frame answers it)`;
  }

  /* Rows ------------------------------------------------------------------------------ */

  row(type, source) {
    this.rows += 1;
    const row = el('li', `insp-row ${type}`);
    row.dataset.source = source;
    row.dataset.n = this.rows;
    return row;
  }

  /** A row that is not a frame: something the page did or saw, or a server event. */
  addNote(kind, source, title, text, { dir, closeCode, starter } = {}) {
    const row = this.row('note', source);
    row.dataset.kind = kind;
    if (dir) row.dataset.dir = dir;
    if (closeCode !== undefined && closeCode !== null) row.dataset.closeCode = closeCode;
    if (starter) row.dataset.starter = starter;
    const top = el('div', 'insp-line insp-top');
    top.append(el('span', 'insp-src ' + source, source === 'page' ? 'page' : 'server'),
      el('span', 'insp-title', title), el('time', 'insp-time', clock()));
    row.append(top);
    if (text) row.append(el('div', 'insp-line insp-words', text));
    this.append(row);
    return row;
  }

  append(row) {
    const list = this.list;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 60;
    list.append(row);
    while (list.children.length > MAX_ROWS) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }
}
