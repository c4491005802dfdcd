#!/usr/bin/env python3
"""Writes ComfyUI's own `/object_info/<class>` for the given node classes to a JSON file, by
starting ComfyUI's server on a loopback port and asking it (the schema as a client sees it).

Usage (ComfyUI's source and venv are NOT part of this repository; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_object_info.py OUT.json Class1 Class2 ...
"""
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

PORT = int(os.environ.get("PORT", "18391"))


def main():
    out, classes = sys.argv[1], sys.argv[2:]
    srv = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(PORT),
         "--disable-auto-launch", "--disable-api-nodes", "--disable-all-custom-nodes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{PORT}"
        for _ in range(240):
            try:
                urllib.request.urlopen(base + "/system_stats", timeout=2).read()
                break
            except Exception:
                time.sleep(0.5)
        res = {}
        for c in classes:
            info = json.load(urllib.request.urlopen(f"{base}/object_info/{urllib.parse.quote(c)}", timeout=30))
            res[c] = info[c]
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    finally:
        srv.terminate()
        srv.wait(timeout=30)


if __name__ == "__main__":
    main()
