// The Node.js `ws` peer for the threadcast benchmark.
//
// Endpoints (the same as threadcast's WebSocket port):
//   /echo        echoes every text or binary message unchanged
//   /ws/<room>   room broadcast: every message a member sends goes to every
//                member, sender included, payload and type exactly as sent.
//                A "?raw=1" query is accepted and ignored.
// A member whose unsent data exceeds SEND_QUEUE_LIMIT_BYTES is closed with
// code 1008 (slow consumer).
//
// Usage: node server.js [--port N] [--host H]   (port 0 = any free port)
// Prints "listening ws=HOST:PORT" on stderr once it accepts connections.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const MAX_PAYLOAD_BYTES = 1 << 20;
// 256 queued 64-byte messages is what gorilla's chat example allows; in
// bytes we allow more, so only a client that stops reading is dropped.
const SEND_QUEUE_LIMIT_BYTES = 4 << 20;
const CLOSE_SLOW_CONSUMER = 1008;

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('host', '127.0.0.1');
const port = Number(arg('port', '0'));

const rooms = new Map(); // room name -> Set of sockets

function joinRoom(ws, name) {
  let members = rooms.get(name);
  if (!members) {
    members = new Set();
    rooms.set(name, members);
  }
  members.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const member of members) {
      if (member.readyState !== member.OPEN) continue;
      if (member.bufferedAmount > SEND_QUEUE_LIMIT_BYTES) {
        member.close(CLOSE_SLOW_CONSUMER, 'slow consumer');
        continue;
      }
      member.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(name);
  });
}

function serveEcho(ws) {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_PAYLOAD_BYTES });

server.on('upgrade', (req, socket, head) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  let route = null;
  if (path === '/echo') {
    route = serveEcho;
  } else if (path.startsWith('/ws/') && path.length > 4 && !path.slice(4).includes('/')) {
    const room = decodeURIComponent(path.slice(4));
    route = (ws) => joinRoom(ws, room);
  }
  if (!route) {
    socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => {});
    route(ws);
  });
});

server.listen(port, host, () => {
  const a = server.address();
  process.stderr.write(`listening ws=${a.address}:${a.port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}
