// connection.js: one room, kept joined whatever the network does.
//
// - Reconnects by itself with exponential backoff and full jitter.
// - Resumes from the last message id it saw (?since=<id>&epoch=<epoch>), so a message
//   is never shown twice and never silently lost; reports gaps and server restarts.
// - Sends the outbox after every (re)connect; the server drops repeated client ids.
// - Falls back from WebSocket to SSE to long polling when a transport keeps failing
//   while the server itself answers, and tries WebSocket again later.
// - Follows threadcast's own close codes: 4001 (token expired) gets a fresh token from
//   the token source and resumes; 4003 (disconnected by the operator) stops for good
//   until the user reconnects by hand; 4004 (room deleted) reconnects to the new room.

import { TRANSPORTS, firstMessageAuth, sendTokenFirst, wsTokenQuery } from './transports.js';
import {
  CLOSE_TOKEN_EXPIRED, CLOSE_DISCONNECTED, CLOSE_ROOM_DELETED, tokenExpired,
} from './protocol.js';

/* Reconnect timing ------------------------------------------------------------------ */

const BACKOFF_BASE_MS = 500;      // first retry within 0.5 s ...
const BACKOFF_CAP_MS = 30_000;    // ... doubling up to 30 s
const STABLE_MS = 10_000;         // connected this long: the next drop starts at 0.5 s again
const WELCOME_TIMEOUT_MS = 10_000; // a transport that has not joined by then has failed
const FAILURES_BEFORE_FALLBACK = 2;
const WS_RETRY_MS = 60_000;       // after a fallback, try WebSocket again this often

/** "Full jitter": wait a random time between 0 and the exponential ceiling, so that
 *  a thousand pages dropped at once by a restart do not all come back at once. */
export function backoffDelay(attempt, random = Math.random) {
  return random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
}

const LADDER = ['ws', 'sse', 'poll'];

export class RoomConnection {
  /**
   * room:      the room to join
   * wsBase:    `ws_url` from /config.json, e.g. "ws://127.0.0.1:8080" (the page's own host and port)
   * token:     the token *source*: a string, null (no token), or a function returning
   *            one (or a promise of one). A function is asked before the first connect
   *            and again whenever the token has expired (close 4001, a 401, or its
   *            `exp` passed): e.g. fetch a fresh token from the app's backend.
   * name:      a guest display name, sent as ?name= (servers without --jwt-secret), or null
   * forced:    'ws' | 'sse' | 'poll' to use only that transport, or null
   * replay:    true: start with the room's history (since=0); false: live messages only
   * outbox:    an Outbox (outbox.js) whose items for this room are sent, or null
   * wsRetryMs: how long after a fallback to try WebSocket again
   * on:        callbacks: status, welcome, message, gap, members, confirmed, rejected, note,
   *            and optionally presence(type, user) for join/leave frames
   */
  constructor({ room, wsBase, token, name, forced, replay, outbox, wsRetryMs, on }) {
    Object.assign(this, { room, wsBase, forced, outbox, on });
    this.tokenSource = typeof token === 'function' ? token : () => token;
    this.token = null;          // the token in use, once the source gave one
    this.tokenStale = true;     // ask the source before the next connect
    this.name = name || null;
    this.wsRetryMs = wsRetryMs || WS_RETRY_MS;
    this.ladder = forced ? [forced] : LADDER;
    this.rung = 0;              // index in ladder of the transport in use
    this.epoch = null;          // the room's epoch, once known
    this.freshEpoch = false;    // the epoch just changed and no message came yet
    this.lastId = replay ? 0 : null; // the newest message id shown (null: none yet)
    this.attempt = 0;           // reconnects since the last stable connection
    this.failures = 0;          // transport attempts in a row that never joined
    this.httpAnswered = false;  // the last failure was checked against /healthz
    this.transport = null;
    this.ready = false;
    this.stopped = true;
    this.state = 'closed';
    this.timers = {};
    this.flushing = false;
    this.generation = 0;        // bumped by every connect() and stop(): a newer one wins
  }

  get kind() { return this.ladder[this.rung]; }
  get label() { return TRANSPORTS[this.kind].label; }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  /** Leaves the room for good (user pressed Disconnect, or switched rooms). */
  stop(reason = 'closed by you') {
    this.stopped = true;
    this.generation += 1;
    this.clearTimers();
    if (this.transport) this.transport.close(1000, reason);
    this.transport = null;
    this.ready = false;
    this.lastClose = { code: 1000, reason };
    this.setState('closed');
  }

  /** Closes the transport and connects again at once, resuming where it was: after
   *  the user pasted a new token (`freshToken`: ask the token source first) or chose
   *  another display name. Does nothing while stopped. */
  reconnect({ freshToken = false } = {}) {
    if (freshToken) this.tokenStale = true;
    if (this.stopped) return;
    if (this.transport) this.transport.close(1000, 'reconnecting');
    this.transport = null;
    this.connect();
  }

  /** Skips the rest of the backoff wait (e.g. the browser says it is online again). */
  retryNow() {
    if (this.state === 'reconnecting') this.connect();
  }

  /* Connecting -------------------------------------------------------------------- */

  /** Gets a token if the one we have is stale, then opens the transport. */
  async connect() {
    this.clearTimers();
    const generation = ++this.generation;
    this.ready = false;
    // A signed token whose `exp` has passed would only be refused: get a fresh one
    // first (the server would close us with 4001 a moment later anyway).
    if (this.tokenStale || tokenExpired(this.token)) {
      this.setState('authorizing');
      let token;
      try {
        token = await this.tokenSource();
      } catch (error) {
        if (generation !== this.generation || this.stopped) return;
        this.on.note(`could not get a token (${error.message}): trying again`, 'close');
        this.scheduleReconnect();
        return;
      }
      if (generation !== this.generation || this.stopped) return; // stopped meanwhile
      this.token = token || null;
      this.tokenStale = false;
    }
    this.open();
  }

  open() {
    const Transport = TRANSPORTS[this.kind];
    const params = new URLSearchParams();
    if (this.lastId !== null) params.set('since', this.lastId);
    if (this.epoch) params.set('epoch', this.epoch);
    // Browsers cannot set headers on a WebSocket or EventSource, so the token goes in
    // the query (fetch sends it as an Authorization header instead).
    if (this.token && Transport.kind !== 'poll' && !(Transport.kind === 'ws' && firstMessageAuth())) {
      params.set('token', this.token);
    }
    // A guest's display name; the server puts it in `from` as unverified.
    if (this.name && Transport.kind !== 'poll') params.set('name', this.name);
    const query = params.toString() ? '?' + params : '';

    this.setState('connecting');
    // Each transport gets callbacks bound to itself, so events from a transport we
    // have already replaced are ignored.
    let transport = null;
    const current = () => transport !== null && transport === this.transport;
    const events = {
      frame: (header, payload) => { if (current()) this.onFrame(header, payload); },
      ready: () => { if (current()) this.onReady(); },
      close: (info) => { if (current()) this.onClose(info); },
    };
    transport = new Transport({
      wsBase: this.wsBase, room: this.room, query, token: this.token, name: this.name, events,
      position: () => ({ since: this.lastId, epoch: this.epoch }),
    });
    this.transport = transport;
    this.timers.welcome = setTimeout(() => {
      if (!current() || this.ready) return;
      transport.close(1000, 'no welcome in time');
      this.onClose({ code: 1006, reason: 'no welcome from the server in time' });
    }, WELCOME_TIMEOUT_MS);
  }

  onReady() {
    clearTimeout(this.timers.welcome);
    this.ready = true;
    this.failures = 0;
    this.httpAnswered = false;
    // Only a connection that stays up resets the backoff; one that drops at once
    // (a server that accepts and then fails) keeps backing off.
    this.timers.stable = setTimeout(() => { this.attempt = 0; }, STABLE_MS);
    this.setState('open');
    this.flush();
    if (this.rung > 0 && !this.forced) this.scheduleWebSocketProbe();
  }

  async onClose({ code, reason }) {
    const wasReady = this.ready;
    this.transport = null;
    this.ready = false;
    this.clearTimers();
    this.lastClose = { code, reason };
    if (wasReady) this.on.note(`${this.label} connection lost: ${code}${reason ? ' ' + reason : ''}`, 'close');
    if (this.stopped) return;
    this.failures = wasReady ? 0 : this.failures + 1;

    // threadcast's own close codes say what to do next.
    switch (code) {
      case CLOSE_DISCONNECTED:
        // The operator wants this user gone: coming straight back would defeat that.
        // Only the user (the Connect button) starts again.
        this.stopped = true;
        this.generation += 1;
        this.setState('closed');
        this.on.note('Disconnected by the operator. Not reconnecting: press Connect to try again.', 'close');
        return;
      case CLOSE_TOKEN_EXPIRED:
        // Ask the token source for a fresh token on the next connect, and resume from
        // the last id as after any drop: nothing lost, nothing twice.
        this.tokenStale = true;
        this.on.note('The token expired: getting a fresh one and reconnecting.', 'epoch');
        this.scheduleReconnect();
        return;
      case CLOSE_ROOM_DELETED:
        // The room and its history are gone; joining again makes a new, empty room
        // with a new epoch, which the welcome reports like a server restart.
        this.on.note('The operator deleted this room: joining it again (a new, empty room).', 'epoch');
        this.scheduleReconnect();
        return;
      default:
        break;
    }

    // A transport that keeps failing while the server answers plain HTTP is being
    // blocked (a proxy that does not pass WebSockets, say): move down the ladder.
    if (this.failures >= FAILURES_BEFORE_FALLBACK && this.rung < this.ladder.length - 1) {
      this.setState('connecting');
      const httpUp = await reachable();
      if (this.stopped || this.transport) return;
      if (httpUp && this.httpAnswered) {
        this.rung += 1;
        this.failures = 0;
        this.httpAnswered = false;
        this.attempt = 0;
        this.on.note(`${TRANSPORTS[this.ladder[this.rung - 1]].label} keeps failing but the server answers: falling back to ${this.label}`, 'fallback');
        this.connect();
        return;
      }
      if (httpUp) {
        // The server may have just come back: give the transport one more immediate try.
        this.httpAnswered = true;
        this.connect();
        return;
      }
      this.httpAnswered = false;
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.setState('reconnecting');
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  /** While on SSE or polling, check now and then whether WebSocket works again (a
   *  WebSocket to /echo: it joins no room), and switch back if it does. */
  scheduleWebSocketProbe() {
    clearTimeout(this.timers.probe);
    this.timers.probe = setTimeout(() => {
      const probe = new WebSocket(this.wsBase + '/echo' + wsTokenQuery(this.token));
      probe.addEventListener('open', () => sendTokenFirst(probe, this.token));
      probe.onopen = () => {
        probe.onclose = null;
        probe.close(1000, 'probe done');
        if (this.stopped || this.rung === 0) return;
        this.on.note('WebSocket works again: switching back to it', 'fallback');
        if (this.transport) this.transport.close(1000, 'switching to WebSocket');
        this.transport = null;
        this.rung = 0;
        this.connect();
      };
      probe.onclose = () => { if (!this.stopped && this.rung > 0) this.scheduleWebSocketProbe(); };
    }, this.wsRetryMs);
  }

  /* What the server sends --------------------------------------------------------- */

  onFrame(header, payload) {
    switch (header.type) {
      case 'welcome': return this.onWelcome(header);
      case 'message': return this.onMessage(header, payload);
      case 'gap':
        // Messages from..to left history before we could get them: say so.
        this.lastId = Math.max(this.lastId || 0, header.to);
        return this.on.gap(header);
      case 'ack': return this.confirm(header.cid, header);
      case 'members': return this.on.members(header.count);
      case 'join':
      case 'leave':
        // A user's first connection to the room arrived, or their last one left.
        return this.on.presence?.(header.type, header.user);
      case 'error':
        // Our message was refused (the token may not publish here); the connection stays.
        return this.on.note(`The server refused a message: ${header.reason || 'no reason given'}`, 'error');
      default: return undefined; // a newer server's frame type: ignore it
    }
  }

  onWelcome(header) {
    const previous = this.epoch;
    const changed = Boolean(header.epoch_changed) || Boolean(previous && header.epoch && previous !== header.epoch);
    if (changed) {
      // The room's history started over (a server restart, or an instance that lost
      // Redis): old ids mean nothing now, and what we have not seen of the new epoch
      // follows. Its first id need not be 1 (the server says so with a gap notice
      // when it matters), so no gap is guessed before it.
      this.lastId = 0;
      this.freshEpoch = true;
    } else if (this.lastId === null && typeof header.last_id === 'number') {
      // Live-only join: everything after last_id is what we will get.
      this.lastId = header.last_id;
    }
    if (header.epoch) this.epoch = header.epoch;
    if (typeof header.members === 'number') this.on.members(header.members);
    this.on.welcome(header, { changed, previous });
  }

  onMessage(header, payload) {
    if (header.id === undefined) { this.on.message(header, payload); return; } // raw server
    if (this.epoch && header.epoch && header.epoch !== this.epoch) {
      this.onWelcome({ type: 'welcome', epoch: header.epoch, epoch_changed: true });
    }
    // Never show a message twice: anything at or below the last id was shown already.
    if (this.lastId !== null && header.id <= this.lastId) return;
    if (this.lastId !== null && header.id > this.lastId + 1 && !this.freshEpoch) {
      this.on.gap({ from: this.lastId + 1, to: header.id - 1, detected: true });
    }
    this.freshEpoch = false;
    this.lastId = header.id;
    if (!this.epoch) this.epoch = header.epoch;
    this.on.message(header, payload);
    // Our own message came back: the room has it, whatever happens to the ack.
    if (header.cid) this.confirm(header.cid, null);
  }

  confirm(cid, ack) {
    const wasPending = this.outbox ? this.outbox.remove(cid) : false;
    if (wasPending || ack) this.on.confirmed(cid, ack);
  }

  /* Sending ----------------------------------------------------------------------- */

  /** Call after adding an item to the outbox: sends it now if the room is joined,
   *  else it goes out with the rest of the outbox after the next (re)connect. */
  send() {
    this.flush();
  }

  flush() {
    if (!this.ready || !this.outbox) return;
    if (this.kind === 'ws') {
      // One socket keeps order by itself. Items sent before a drop and never
      // confirmed are sent again after the reconnect; the server drops repeats.
      this.sentOnSocket = this.sentOnSocket && this.sentOnSocket.transport === this.transport
        ? this.sentOnSocket : { transport: this.transport, cids: new Set() };
      for (const item of this.outbox.forRoom(this.room)) {
        if (this.sentOnSocket.cids.has(item.cid)) continue;
        if (this.transport.send(item)) this.sentOnSocket.cids.add(item.cid);
      }
    } else {
      this.flushOverHttp();
    }
  }

  /** POST the outbox items one at a time, in order, each with its cid. */
  async flushOverHttp() {
    if (this.flushing) { this.flushAgain = true; return; }
    this.flushing = true;
    try {
      do {
        this.flushAgain = false;
        for (const item of this.outbox.forRoom(this.room)) {
          const transport = this.transport;
          if (!this.ready || !transport) return;
          try {
            const answer = await transport.send(item);
            this.confirm(item.cid, { type: 'ack', cid: item.cid, id: answer.id, duplicate: answer.duplicate });
          } catch (error) {
            if (error.status === 401) {
              // The token expired while we were sending: keep the message, get a fresh
              // token and reconnect (as a 4001 close would), then send it again.
              this.on.note('sending failed (' + error.message + '): kept in the outbox', 'close');
              if (this.transport === transport) {
                transport.close(1000, 'token refused');
                this.onClose({ code: CLOSE_TOKEN_EXPIRED, reason: 'token refused by /publish' });
              }
              return;
            }
            if (error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429) {
              // The server will never take this one (too big, bad room, no token).
              this.outbox.remove(item.cid);
              this.on.rejected(item.cid, error.message);
              continue;
            }
            // Unreachable: keep it in the outbox for the next connection.
            this.on.note('sending failed (' + error.message + '): kept in the outbox', 'close');
            return;
          }
        }
      } while (this.flushAgain);
    } finally {
      this.flushing = false;
    }
  }

  /* Helpers ----------------------------------------------------------------------- */

  setState(state) {
    this.state = state;
    this.on.status(this.status());
  }

  /** What the status callback gets: { state, transport, label, retryAt, lastClose }. */
  status() {
    return {
      state: this.state,
      transport: this.kind,
      label: this.label,
      retryAt: this.retryAt,
      lastClose: this.lastClose,
    };
  }

  clearTimers() {
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.timers = {};
  }
}

/** Does the server answer plain HTTP? Tells "server down" from "transport blocked". */
async function reachable() {
  try {
    const response = await fetch('/healthz', { cache: 'no-store', signal: AbortSignal.timeout(5000) });
    return response.ok;
  } catch {
    return false;
  }
}
