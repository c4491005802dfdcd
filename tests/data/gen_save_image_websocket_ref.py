#!/usr/bin/env python3
"""Reference WebSocket traffic of ComfyUI's SaveImageWebsocket (tests/save_image_websocket.rs).

Queues `EmptyImage(5x3, batch 2, color 0x3366CC) -> SaveImageWebsocket` on a running ComfyUI
and records every message its WebSocket client receives until the prompt finishes (text
messages as JSON, binary frames base64-encoded): once as a client that sends no feature flags
(PREVIEW_IMAGE frames: type 1, format 2 = PNG) and once as one announcing
`supports_preview_metadata` (PREVIEW_IMAGE_WITH_METADATA frames: type 4).

Usage (ComfyUI's venv, which has aiohttp), with ComfyUI started as
    python main.py --cpu --listen 127.0.0.1 --port 18397 --disable-all-custom-nodes \
        --whitelist-custom-nodes websocket_image_save.py
run
    python tests/data/gen_save_image_websocket_ref.py tests/data/save_image_websocket_ref.json

The file in the repository was made with ComfyUI a125cd84 (v0.3.64), aiohttp 3.14.5,
Pillow 13.0.0 on x86-64 (the second run finds EmptyImage cached, as ComfyUI reuses outputs).
"""
import asyncio
import base64
import json
import sys
import uuid

import aiohttp

BASE = "http://127.0.0.1:18397"
PROMPT = {
    "1": {"class_type": "EmptyImage",
          "inputs": {"width": 5, "height": 3, "batch_size": 2, "color": 0x3366CC}},
    "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
}


async def run(meta):
    cid = str(uuid.uuid4())
    out = []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{BASE}/ws?clientId={cid}") as ws:
            if meta:
                await ws.send_json({"type": "feature_flags",
                                    "data": {"supports_preview_metadata": True}})
            r = await s.post(f"{BASE}/prompt", json={"prompt": PROMPT, "client_id": cid})
            pid = (await r.json())["prompt_id"]
            while True:
                m = await ws.receive()
                if m.type == aiohttp.WSMsgType.TEXT:
                    j = json.loads(m.data)
                    out.append({"text": j})
                    if (j["type"] == "executing" and j["data"].get("node") is None
                            and j["data"].get("prompt_id") == pid):
                        break
                elif m.type == aiohttp.WSMsgType.BINARY:
                    out.append({"binary": base64.b64encode(m.data).decode()})
                else:
                    break
    return {"client_id": cid, "prompt_id": pid, "messages": out}


async def main():
    res = {"prompt": PROMPT, "legacy": await run(False), "metadata": await run(True)}
    with open(sys.argv[1], "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")


asyncio.run(main())
