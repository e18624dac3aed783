// Peer server for minipush's benchmarks (bench/run.sh): a plain broadcast and echo server
// on Node.js and the `ws` package, as its README's broadcast example writes it.
//
// Protocol (bench/peers/README.md): WebSocket on any path, no auth, no subprotocol.
// {"type":"broadcast","data":X} sends {"type":"push","data":X} to every connected client
// (serialised once into one Buffer, sent as a text frame); {"type":"echo","id":I,"data":X}
// answers {"type":"reply","ref":I,"data":{"echo":X}}; anything else is ignored.
// Port: first argument, else env PORT, else 9503.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 9503);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    if (msg === null || typeof msg !== 'object') return;
    if (msg.type === 'broadcast') {
      const out = Buffer.from(JSON.stringify({ type: 'push', data: msg.data }));
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(out, { binary: false });
      }
    } else if (msg.type === 'echo') {
      ws.send(JSON.stringify({ type: 'reply', ref: msg.id, data: { echo: msg.data } }));
    }
  });
});

wss.on('listening', () => console.error(`peer-node-ws listening on 127.0.0.1:${port}`));
