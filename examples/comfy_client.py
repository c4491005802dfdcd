#!/usr/bin/env python3
"""A minimal ComfyUI API client using only the standard library.

It does what API scripts do against ComfyUI (or `comfyrs serve`):
open the WebSocket, queue a prompt, read events until `executing {node: null}`,
read the history entry and download every output file through /view.

    python3 examples/comfy_client.py --server 127.0.0.1:8188 --workflow workflow_api.json --out outputs/

It prints one JSON object per WebSocket message, then a summary line:
{"summary": {"prompt_id", "events", "status", "outputs", "downloaded"}}.
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys
import urllib.parse
import urllib.request
import uuid


class WebSocket:
    """Just enough RFC 6455 for ComfyUI's /ws: text and binary frames, no extensions."""

    def __init__(self, host, port, path, timeout=60):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake failed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError("websocket handshake refused: " + head.decode(errors="replace"))

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def recv(self):
        """Returns (opcode, payload) of the next complete message."""
        message, first_op = b"", None
        while True:
            b0, b1 = self._read(2)
            fin, op = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if op == 0x9:  # ping
                self.send(data, opcode=0xA)
                continue
            if op == 0x8:
                raise ConnectionError("websocket closed by server")
            if op != 0:
                first_op = op
            message += data
            if fin:
                return first_op, message

    def send(self, data, opcode=0x1):
        if isinstance(data, str):
            data = data.encode()
        head = bytes([0x80 | opcode])
        n = len(data)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def close(self):
        try:
            self.send(b"", opcode=0x8)
        finally:
            self.sock.close()


class Client:
    def __init__(self, server, token=None):
        self.server = server
        self.token = token

    def _req(self, method, path, body=None):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.server}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def queue_prompt(self, prompt, client_id):
        status, body = self._req("POST", "/prompt", {"prompt": prompt, "client_id": client_id})
        if status != 200:
            raise RuntimeError(f"prompt refused ({status}): {body.decode(errors='replace')}")
        return json.loads(body)

    def history(self, prompt_id):
        return json.loads(self._req("GET", f"/history/{prompt_id}")[1])

    def view(self, item):
        q = urllib.parse.urlencode(
            {"filename": item["filename"], "subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        )
        status, body = self._req("GET", f"/view?{q}")
        if status != 200:
            raise RuntimeError(f"/view failed ({status})")
        return body


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", default="127.0.0.1:8188")
    ap.add_argument("--workflow", required=True, help="API-format workflow JSON file")
    ap.add_argument("--out", default=None, help="folder to download output files into")
    ap.add_argument("--token", default=os.environ.get("COMFYRS_TOKEN"))
    args = ap.parse_args()

    with open(args.workflow) as f:
        prompt = json.load(f)
    client = Client(args.server, args.token)
    client_id = uuid.uuid4().hex
    host, port = args.server.rsplit(":", 1)
    path = f"/ws?clientId={client_id}"
    if args.token:
        path += "&token=" + urllib.parse.quote(args.token)
    ws = WebSocket(host, int(port), path)
    events = []
    op, data = ws.recv()
    hello = json.loads(data)
    print(json.dumps(hello), flush=True)
    events.append(hello["type"])
    assert hello["data"]["sid"] == client_id

    queued = client.queue_prompt(prompt, client_id)
    prompt_id = queued["prompt_id"]
    while True:
        op, data = ws.recv()
        if op == 0x2:  # binary: previews
            kind = struct.unpack(">I", data[:4])[0]
            print(json.dumps({"binary": kind, "bytes": len(data)}), flush=True)
            continue
        msg = json.loads(data)
        print(json.dumps(msg), flush=True)
        events.append(msg["type"])
        d = msg.get("data", {})
        if msg["type"] == "executing" and d.get("node") is None and d.get("prompt_id") == prompt_id:
            break
    ws.close()

    entry = client.history(prompt_id)[prompt_id]
    downloaded = []
    for node_id, ui in entry["outputs"].items():
        for item in ui.get("images", []):
            data = client.view(item)
            if args.out:
                os.makedirs(args.out, exist_ok=True)
                dest = os.path.join(args.out, os.path.basename(item["filename"]))
                with open(dest, "wb") as f:
                    f.write(data)
                downloaded.append(dest)
    summary = {
        "prompt_id": prompt_id,
        "events": events,
        "status": entry["status"]["status_str"],
        "outputs": entry["outputs"],
        "downloaded": downloaded,
    }
    print(json.dumps({"summary": summary}), flush=True)
    return 0 if summary["status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
