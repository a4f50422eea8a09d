// outbox.js: messages the user sent that the server has not confirmed yet.
//
// Every message gets a client id (cid) when the user sends it and goes into the outbox
// first. The connection sends everything in the outbox after every (re)connect, and a
// message leaves the outbox only when the server confirms it: an `ack` frame (or the
// answer to POST /publish), or the message itself coming back with our cid. Resending
// is safe because the room drops a cid it has already seen, so each message appears
// in the room exactly once however often the connection drops.
//
// The outbox is mirrored to localStorage, so what was typed while offline survives a
// page reload. Each change re-reads the stored list and changes only its own entry,
// so two tabs of the page do not overwrite each other's messages.

import { bytesToBase64, base64ToBytes } from './protocol.js';

const KEY = 'threadcast.outbox.v1';

export class Outbox {
  constructor() {
    /** Items this tab is responsible for, oldest first: those stored when the page
     *  loaded, plus those typed here since. */
    this.items = readStored();
    /** Set when localStorage refused a write (private mode, full): the outbox still
     *  works, but would not survive a reload. */
    this.storageError = null;
  }

  /** Adds a message: `payload` is a string (text) or a Uint8Array (binary). */
  add(room, cid, payload) {
    const item = { room, cid, created: Date.now() };
    if (typeof payload === 'string') item.text = payload;
    else item.base64 = bytesToBase64(payload);
    this.items.push(item);
    this.write((stored) => stored.concat([item]));
    return item;
  }

  /** Removes a confirmed message; returns whether it was here. */
  remove(cid) {
    const before = this.items.length;
    this.items = this.items.filter((item) => item.cid !== cid);
    this.write((stored) => stored.filter((item) => item.cid !== cid));
    return this.items.length !== before;
  }

  has(cid) {
    return this.items.some((item) => item.cid === cid);
  }

  /** The unconfirmed messages of one room, oldest first. */
  forRoom(room) {
    return this.items.filter((item) => item.room === room);
  }

  write(change) {
    try {
      localStorage.setItem(KEY, JSON.stringify(change(readStored())));
      this.storageError = null;
    } catch (error) {
      this.storageError = error;
    }
  }
}

/** An item's payload as the transports want it: a string or a Uint8Array. */
export function payloadOf(item) {
  return item.text !== undefined ? item.text : base64ToBytes(item.base64);
}

function readStored() {
  try {
    const stored = JSON.parse(localStorage.getItem(KEY) || '[]');
    return Array.isArray(stored) ? stored.filter((item) => item && item.cid && item.room) : [];
  } catch {
    return [];
  }
}
