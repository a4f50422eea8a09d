// threadcast demo page: join a room over WebSocket, show what arrives, send what you type.
// Every message is rendered with textContent, never innerHTML, so a message can never
// inject markup or script into the page.
'use strict';

const statusEl = document.getElementById('status');
const logEl = document.getElementById('log');
const roomInput = document.getElementById('room');
let socket = null;
let wsBase = null;

function setStatus(state, text) {
  statusEl.className = 'status ' + state;
  statusEl.textContent = text;
}

function addLine(text, cls) {
  const li = document.createElement('li');
  if (cls) li.className = cls;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString();
  li.append(time, document.createTextNode(text));
  logEl.append(li);
  logEl.scrollTop = logEl.scrollHeight;
}

function join(room) {
  if (socket) socket.close(1000, 'switching rooms');
  setStatus('connecting', 'connecting…');
  // The browser performs the HTTP upgrade handshake for us; `open` fires after the 101.
  const ws = new WebSocket(wsBase + '/ws/' + encodeURIComponent(room));
  ws.binaryType = 'arraybuffer';
  socket = ws;
  ws.onopen = () => { setStatus('open', 'open · ' + room); addLine('joined ' + room, 'system'); };
  ws.onmessage = (event) => {
    if (typeof event.data === 'string') addLine(event.data);
    else addLine('[binary, ' + event.data.byteLength + ' bytes]');
  };
  // `close` carries the code and reason from the server's close frame (1001, 1008 ...).
  ws.onclose = (event) => {
    if (socket === ws) setStatus('closed', 'closed · ' + event.code + (event.reason ? ' ' + event.reason : ''));
  };
}

document.getElementById('send-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = document.getElementById('message');
  if (input.value && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(input.value);
    input.value = '';
  }
});

document.getElementById('room-form').addEventListener('submit', (event) => {
  event.preventDefault();
  join(roomInput.value);
});

fetch('/config.json')
  .then((response) => response.json())
  .then((config) => { wsBase = config.ws_url; join(roomInput.value); })
  .catch((error) => setStatus('closed', 'cannot load /config.json: ' + error));
