#!/usr/bin/env python3
"""Runs one workflow that mixes core nodes and custom-pack nodes in ComfyUI and in comfyrs
(`serve --comfyui-packs`), then compares what each produced: the text outputs, the saved
images pixel by pixel, and the packs' web routes (/extensions, /i18n, /workflow_templates).

    scripts/comfyui_packs/setup.sh /tmp/packs
    python3 scripts/comfyui_packs/compare.py --packs /tmp/packs/custom_nodes

Defaults use the reference environment (/work/ref/ComfyUI, /work/ref/venv) and a debug build
of comfyrs. ComfyUI is only read: its custom_nodes come from an extra_model_paths.yaml, and
input/output/temp folders are under --out. Stdlib only (PNG decoding through the ComfyUI
Python, which has PIL and numpy). Exit status 0 when everything matches.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_up(port, proc, what, timeout=600):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}; see its log")
        try:
            get(port, "/system_stats")
            return time.time() - start
        except OSError:
            time.sleep(0.25)
    sys.exit(f"{what} did not come up in {timeout}s")


def run_prompt(port, prompt, timeout=600):
    pid = post(port, "/prompt", {"prompt": prompt})["prompt_id"]
    start = time.time()
    while time.time() - start < timeout:
        h = get(port, f"/history/{pid}")
        if pid in h and h[pid].get("status", {}).get("completed") is not None:
            entry = h[pid]
            if entry["status"].get("status_str") != "success":
                sys.exit(f"prompt failed on port {port}: {json.dumps(entry['status'])[:2000]}")
            return entry["outputs"], time.time() - start
        time.sleep(0.1)
    sys.exit(f"prompt did not finish on port {port}")


def start(cmd, log, env=None, cwd=None):
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packs", required=True, help="a custom_nodes folder (setup.sh)")
    ap.add_argument("--comfyui", default="/work/ref/ComfyUI")
    ap.add_argument("--python", default="/work/ref/venv/bin/python")
    ap.add_argument("--comfyrs", default=os.path.join(REPO, "target/debug/comfyrs"))
    ap.add_argument("--workflow", default=os.path.join(HERE, "mixed_workflow.json"))
    ap.add_argument("--out", default="/tmp/comfyrs-packs-compare")
    a = ap.parse_args()
    packs = os.path.abspath(a.packs)
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    prompt = json.load(open(a.workflow))
    results = {}

    # ComfyUI, with the packs through extra_model_paths (its checkout stays untouched).
    cu = os.path.join(a.out, "comfyui")
    for d in ("input", "output", "temp"):
        os.makedirs(os.path.join(cu, d))
    yaml = os.path.join(cu, "extra_model_paths.yaml")
    with open(yaml, "w") as f:
        f.write(f"packs:\n  base_path: {os.path.dirname(packs)}\n  custom_nodes: {os.path.basename(packs)}\n")
    port = free_port()
    log = open(os.path.join(a.out, "comfyui.log"), "w")
    proc = start([a.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                  "--disable-auto-launch", "--disable-api-nodes", "--extra-model-paths-config", yaml,
                  "--input-directory", os.path.join(cu, "input"), "--output-directory",
                  os.path.join(cu, "output"), "--temp-directory", os.path.join(cu, "temp")],
                 log, cwd=a.comfyui)
    try:
        boot = wait_up(port, proc, "ComfyUI")
        outputs, took = run_prompt(port, prompt)
        web = {k: get(port, k) for k in ("/extensions", "/i18n", "/workflow_templates")}
        results["comfyui"] = (outputs, web, os.path.join(cu, "output"), boot, took)
    finally:
        stop(proc)

    # comfyrs, with the packs in its ComfyUI host.
    cr = os.path.join(a.out, "comfyrs")
    os.makedirs(cr)
    port = free_port()
    log = open(os.path.join(a.out, "comfyrs.log"), "w")
    proc = start([a.comfyrs, "serve", "--data-dir", cr, "--port", str(port), "--comfyui-packs", packs,
                  "--comfyui-python", a.python, "--comfyui-root", a.comfyui], log)
    try:
        boot = wait_up(port, proc, "comfyrs")
        outputs, took = run_prompt(port, prompt)
        web = {k: get(port, k) for k in ("/extensions", "/i18n", "/workflow_templates")}
        hosts = get(port, "/comfyrs/node_hosts")
        results["comfyrs"] = (outputs, web, os.path.join(cr, "output"), boot, took)
    finally:
        stop(proc)

    ok = True
    (o1, w1, d1, b1, t1), (o2, w2, d2, b2, t2) = results["comfyui"], results["comfyrs"]
    print(f"ComfyUI: boot {b1:.1f}s, prompt {t1:.2f}s; comfyrs: boot {b2:.1f}s, prompt {t2:.2f}s")
    h = hosts[0]
    print(f"comfyrs host: {len(h['nodes'])} runnable pack classes, {len(h['not_runnable'])} not runnable")
    for node in sorted(set(o1) | set(o2), key=int):
        a1, a2 = o1.get(node), o2.get(node)
        if a1 is None or a2 is None:
            print(f"node {node}: outputs only on {'ComfyUI' if a2 is None else 'comfyrs'}")
            ok = False
        elif "images" in a1:
            for i1, i2 in zip(a1["images"], a2["images"]):
                diff = compare_png(a.python, os.path.join(d1, i1["subfolder"], i1["filename"]),
                                   os.path.join(d2, i2["subfolder"], i2["filename"]))
                good = diff is not None and diff <= 1
                ok &= good
                print(f"node {node}: {i1['filename']} vs {i2['filename']}: max |diff| {diff} (8-bit) {'OK' if good else 'DIFFERENT'}")
        else:
            same = a1 == a2
            ok &= same
            print(f"node {node}: {json.dumps(a1)} vs {json.dumps(a2)} {'OK' if same else 'DIFFERENT'}")
    packs_ext = sorted(e for e in w1["/extensions"] if e.startswith("/extensions/") and e.split("/")[2] in
                       {n for n in os.listdir(packs)})
    for key, v1, v2 in (("/extensions (pack files)", packs_ext, sorted(w2["/extensions"])),
                        ("/i18n", w1["/i18n"], w2["/i18n"]),
                        ("/workflow_templates", w1["/workflow_templates"], w2["/workflow_templates"])):
        same = v1 == v2
        ok &= same
        print(f"{key}: {len(v1) if isinstance(v1, list) else len(v1)} entries {'OK' if same else 'DIFFERENT'}")
        if not same:
            print(f"  ComfyUI: {json.dumps(v1)[:600]}\n  comfyrs: {json.dumps(v2)[:600]}")
    print("MATCH" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


def compare_png(python, p1, p2):
    code = ("import sys, numpy as np; from PIL import Image; "
            "a = np.asarray(Image.open(sys.argv[1]), dtype=np.int32); b = np.asarray(Image.open(sys.argv[2]), dtype=np.int32); "
            "print(int(np.abs(a - b).max()) if a.shape == b.shape else 'shape %s vs %s' % (a.shape, b.shape))")
    out = subprocess.run([python, "-c", code, p1, p2], capture_output=True, text=True).stdout.strip()
    try:
        return int(out)
    except ValueError:
        print(f"  {out}")
        return None


if __name__ == "__main__":
    main()
