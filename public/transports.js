// transports.js: three ways to talk to a room, with one small shape in common.
//
//   WebSocketTransport    one socket, both directions      /ws/<room>
//   EventSourceTransport  Server-Sent Events in, POST out  /events/<room> + POST /publish/<room>
//   PollTransport         long polling in, POST out        /poll/<room>   + POST /publish/<room>
//
// Each is made with `events`, three callbacks the connection (connection.js) handles:
//   events.frame(header, payload)   a frame from the server: welcome, message, gap, ack,
//                                   members, join, leave, error
//   events.ready()                  the room is joined; messages can be sent now
//   events.close({ code, reason })  the transport died (not called after our own close());
//                                   the HTTP transports report threadcast's own close
//                                   codes too (4001 for a 401, 4003, 4004), like a WebSocket
// and has `send(item)` for an outbox item and `close(code, reason)`.

import {
  parseFrame, fromJsonMessage, withClientId, parseCloseEvent, roomPath, CLOSE_TOKEN_EXPIRED,
} from './protocol.js';
import { payloadOf } from './outbox.js';

/* ---------------------------------------------------------------------------------
 * WebSocket
 * ------------------------------------------------------------------------------- */

// With `--auth first-message` (config.json says "auth": "first-message") the server
// wants the token as the first message on every WebSocket instead of in the URL,
// where proxies would log it. Until it arrives the server sends nothing.
let firstMessageMode = false;
export function useFirstMessageAuth() { firstMessageMode = true; }
export function firstMessageAuth() { return firstMessageMode; }

/** The query part that carries the token on a WebSocket URL ('' in first-message mode). */
export function wsTokenQuery(token) {
  return token && !firstMessageAuth() ? '?token=' + encodeURIComponent(token) : '';
}

/** Sends the token as the first message, if the server wants it that way. */
export function sendTokenFirst(socket, token) {
  if (firstMessageMode && token) socket.send(token);
}

// Lesson mode (`?inspect=1` on the page, public/inspector.js): the inspector, if any.
// It says which room's socket it wants (`wants(room)`); that socket is opened with
// `inspect=1` too, and the server's `{"type":"inspect",…}` frames on it go to the
// inspector, never to the room. It also hears when the page closes that socket and
// the socket's `close` event.
let inspector = null;
export function inspectWebSockets(hook) { inspector = hook; }

export class WebSocketTransport {
  static kind = 'ws';
  static label = 'WebSocket';

  constructor({ wsBase, room, query, token, events }) {
    // `new WebSocket(url)` starts the opening handshake at once: an HTTP GET with
    // `Upgrade: websocket` that the server answers with `101 Switching Protocols`.
    // Until then `socket.readyState` is WebSocket.CONNECTING (0).
    const inspected = Boolean(inspector && inspector.wants(room));
    const url = wsBase + '/ws/' + roomPath(room) + query + (inspected ? (query ? '&' : '?') + 'inspect=1' : '');
    const socket = new WebSocket(url);
    // Binary frames arrive as ArrayBuffer instead of Blob, so they can be read at once.
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    this.closed = false;
    this.inspector = inspected ? inspector : null;
    if (inspected) inspector.opened(socket, url);

    // `open`: the handshake succeeded; readyState is now WebSocket.OPEN (1). We still
    // wait for the server's `welcome` frame before calling the room joined.
    socket.addEventListener('open', () => sendTokenFirst(socket, token));

    // `message`: one whole frame. event.data is a string for a text frame and an
    // ArrayBuffer for a binary frame (because of binaryType above).
    socket.addEventListener('message', (event) => {
      if (this.closed) return;
      let frame;
      try {
        frame = parseFrame(event.data);
      } catch {
        // No header line: a server without the resume protocol. Show it as it is.
        const payload = typeof event.data === 'string' ? event.data : new Uint8Array(event.data);
        events.frame({ type: 'message' }, payload);
        return;
      }
      // What the server saw of this connection (lesson mode): for the inspector only.
      if (frame.header.type === 'inspect') {
        if (this.inspector) this.inspector.event(frame.header);
        return;
      }
      events.frame(frame.header, frame.payload);
      if (frame.header.type === 'welcome') events.ready();
    });

    // `error` carries no detail at all (on purpose: a page may not learn why a
    // connection to another host failed). It is always followed by `close`.
    socket.addEventListener('error', () => {});

    // `close`: the connection is over; readyState is WebSocket.CLOSED (3).
    // event.code and event.reason come from the server's close frame (1001 when the
    // server shuts down, 1008 for a slow consumer, 4001 when the token expired, 4003
    // disconnected by the operator, 4004 room deleted, ...). 1006 means no close frame
    // arrived at all: the network failed, the handshake was refused or never answered.
    socket.addEventListener('close', (event) => {
      if (this.inspector) this.inspector.closed(socket, event);
      if (this.closed) return;
      this.closed = true;
      events.close({ code: event.code, reason: event.reason });
    });
  }

  /** Sends one outbox item as `cid:<id>\n<payload>` (text or binary frame, like the
   *  payload). Returns false if the socket is not open; the item stays in the outbox. */
  send(item) {
    if (this.socket.readyState !== WebSocket.OPEN) return false;
    // send() only queues the frame; socket.bufferedAmount tells how much is still
    // waiting to go out.
    this.socket.send(withClientId(item.cid, payloadOf(item)));
    return true;
  }

  close(code = 1000, reason = '') {
    this.closed = true;
    if (this.inspector) this.inspector.pageClosing(this.socket, code, reason);
    // Our close frame carries code 1000 ("normal") and a reason of at most 123 bytes.
    // Pages may only send 1000 or 3000-4999.
    this.socket.close(code, reason);
  }
}

/* ---------------------------------------------------------------------------------
 * Server-Sent Events for receiving, POST /publish for sending
 * ------------------------------------------------------------------------------- */

export class EventSourceTransport {
  static kind = 'sse';
  static label = 'SSE + POST';

  constructor({ room, query, token, name, events }) {
    this.room = room;
    this.token = token;
    this.name = name;
    this.closed = false;
    const source = new EventSource('/events/' + roomPath(room) + query);
    this.source = source;
    const json = (handler) => (event) => {
      if (!this.closed) handler(JSON.parse(event.data));
    };
    source.addEventListener('welcome', json((header) => {
      events.frame(header, null);
      events.ready();
    }));
    // Text messages come as `event: message`, binary ones as `event: binary` with the
    // payload in base64; fromJsonMessage turns both into { header, payload }.
    const onMessage = json((object) => {
      const { header, payload } = fromJsonMessage(object);
      events.frame(header, payload);
    });
    source.addEventListener('message', onMessage);
    source.addEventListener('binary', onMessage);
    source.addEventListener('gap', json((header) => events.frame(header, null)));
    // Control events carry the same JSON as the WebSocket control frames.
    for (const type of ['members', 'join', 'leave']) {
      source.addEventListener(type, json((header) => events.frame(header, null)));
    }
    // EventSource would reconnect by itself (sending Last-Event-ID so the server
    // resumes), but we close it and let the connection reconnect: then all three
    // transports share one backoff and one status display.
    const end = (code, reason) => {
      if (this.closed) return;
      this.close();
      events.close({ code, reason });
    };
    // `event: close` ends the stream with a reason: {"type":"close","code":4001,…}
    // (older servers: plain text, at shutdown). EventSource's own `error` event says
    // nothing about why (not even an HTTP status).
    source.addEventListener('close', (event) => {
      const { code, reason } = parseCloseEvent(event.data);
      end(code, reason || 'server shutting down');
    });
    source.addEventListener('error', () => end(1006, 'event stream failed'));
  }

  send(item) {
    return publish(this.room, item, this.token, this.name);
  }

  close() {
    this.closed = true;
    this.source.close();
  }
}

/* ---------------------------------------------------------------------------------
 * Long polling for receiving, POST /publish for sending
 * ------------------------------------------------------------------------------- */

export class PollTransport {
  static kind = 'poll';
  static label = 'long polling + POST';

  /** `position()` says where to resume: { since, epoch } (either may be null). */
  constructor({ room, token, name, position, events }) {
    this.room = room;
    this.token = token;
    this.name = name;
    this.closed = false;
    this.abort = new AbortController();
    this.loop(position, events).catch((error) => {
      if (this.closed) return;
      this.closed = true;
      // A poll checks the token on every request: 401 once it has expired, which is
      // what a WebSocket hears as close code 4001.
      events.close(error.status === 401
        ? { code: CLOSE_TOKEN_EXPIRED, reason: 'token expired (HTTP 401)' }
        : { code: 1006, reason: 'poll failed: ' + error.message });
    });
  }

  async loop(position, events) {
    // There is no welcome to wait for: once the server answers at all, we can send.
    await this.get('/healthz');
    if (this.closed) return;
    events.ready();
    let { since, epoch } = position();
    let first = true;
    while (!this.closed) {
      const params = new URLSearchParams();
      if (since !== null && since !== undefined) params.set('since', since);
      if (epoch) params.set('epoch', epoch);
      const query = params.toString() ? '?' + params : '';
      // Returns at once if there is something after `since`, else waits (up to 25 s
      // on the server) for the next message and may come back empty.
      const answer = await (await this.get('/poll/' + roomPath(this.room) + query)).json();
      if (this.closed) return;
      if (first || answer.epoch_changed) {
        events.frame({ type: 'welcome', room: this.room, epoch: answer.epoch,
          epoch_changed: Boolean(answer.epoch_changed), last_id: null }, null);
        first = false;
      }
      if (answer.gap) events.frame({ type: 'gap', from: answer.gap.from, to: answer.gap.to }, null);
      for (const object of answer.messages || []) {
        const { header, payload } = fromJsonMessage(object);
        events.frame(header, payload);
      }
      epoch = answer.epoch;
      const lastInAnswer = answer.messages && answer.messages.length
        ? answer.messages[answer.messages.length - 1].id : null;
      since = answer.last_id ?? lastInAnswer ?? since;
      // A waiting poll whose user was disconnected (4003) or whose room was deleted
      // (4004) answers at once with `closed`: end like a WebSocket closed that way.
      if (answer.closed) {
        this.closed = true;
        events.close({ code: answer.closed.code, reason: answer.closed.reason || '' });
        return;
      }
    }
  }

  async get(path) {
    const response = await fetch(path, {
      cache: 'no-store',
      signal: this.abort.signal,
      headers: authHeaders(this.token),
    });
    if (!response.ok) throw Object.assign(new Error('HTTP ' + response.status), { status: response.status });
    return response;
  }

  send(item) {
    return publish(this.room, item, this.token, this.name);
  }

  close() {
    this.closed = true;
    this.abort.abort();
  }
}

/* ---------------------------------------------------------------------------------
 * POST /publish/<room>?cid=<id>: sending without a WebSocket
 * ------------------------------------------------------------------------------- */

/** Publishes one outbox item; resolves to the server's answer
 *  { delivered, id, epoch, duplicate }. Rejects with error.status set for an HTTP
 *  error, without it when the server could not be reached. A guest's `name` goes as
 *  ?name= (the server adds it to the message as an unverified `from`). */
export async function publish(room, item, token, name) {
  const body = payloadOf(item);
  const params = new URLSearchParams({ cid: item.cid });
  if (name) params.set('name', name);
  const response = await fetch('/publish/' + roomPath(room) + '?' + params, {
    method: 'POST',
    body,
    cache: 'no-store',
    headers: {
      'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/octet-stream',
      ...authHeaders(token),
    },
  });
  if (!response.ok) {
    const error = new Error('HTTP ' + response.status + ' ' + (await response.text()).slice(0, 120));
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function authHeaders(token) {
  return token ? { Authorization: 'Bearer ' + token } : {};
}

export const TRANSPORTS = {
  ws: WebSocketTransport,
  sse: EventSourceTransport,
  poll: PollTransport,
};
