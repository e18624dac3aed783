"""Peer server for minipush's benchmarks (bench/run.sh): a plain broadcast and echo server
on Python's `websockets` package (asyncio implementation, `websockets.broadcast`).

Protocol (bench/peers/README.md): WebSocket on any path, no auth, no subprotocol.
{"type":"broadcast","data":X} sends {"type":"push","data":X} to every connected client
(serialised once; broadcast() frames it once and writes it to each connection);
{"type":"echo","id":I,"data":X} answers {"type":"reply","ref":I,"data":{"echo":X}};
anything else is ignored. Port: first argument, else env PORT, else 9504.
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

PORT = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "9504"))


async def handler(ws):
    try:
        async for raw in ws:
            await on_message(ws, raw)
    except ConnectionClosed:
        pass  # a client that went away without a close frame


async def on_message(ws, raw):
    if not isinstance(raw, str):
        return
    try:
        msg = json.loads(raw)
    except ValueError:
        return
    if not isinstance(msg, dict):
        return
    kind = msg.get("type")
    if kind == "broadcast":
        out = json.dumps({"type": "push", "data": msg.get("data")}, separators=(",", ":"))
        broadcast(ws.server.connections, out)
    elif kind == "echo":
        out = {"type": "reply", "ref": msg.get("id"), "data": {"echo": msg.get("data")}}
        await ws.send(json.dumps(out, separators=(",", ":")))


async def main():
    # No compression: the load generator does not offer it, and no peer uses it.
    async with serve(handler, "127.0.0.1", PORT, compression=None) as server:
        print(f"peer-python-websockets listening on 127.0.0.1:{PORT}", file=sys.stderr)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
