#!/usr/bin/env python3
"""Run API-format workflows on a freshly started ComfyUI reference server; report times and memory.

    flock /tmp/bigmem.lock python3 scripts/parity/comfy_run.py --models-dir /work/models-big \
        --out /work/models-big/refs/default [--flag --use-pytorch-cross-attention] WF.json [WF.json ...]

Starts `python main.py --cpu --force-fp32 --fp32-text-enc --disable-auto-launch --disable-api-nodes
--disable-all-custom-nodes` (+ --flag ...) from --comfy-dir with its own port, input, output, temp and
user folders under --work (models from --models-dir/{checkpoints,controlnet,diffusion_models,text_encoders,vae,loras} via an extra_model_paths file; the
shared ComfyUI tree is not written to), runs each workflow once with ../shared/parity/client.py,
copies its first image to OUT/<workflow stem>.png, then stops the server. The workflows share one
server, so a checkpoint is loaded once for all of them (as ComfyUI's cache does).

Prints JSON: for each workflow the client's wall seconds and the seconds from server process start
to its completion; tqdm s/it lines of the KSampler (per-step seconds); the server's peak RSS (VmHWM).
The img2img input (gen_test_image.py's comfyrs_test_256.png) is written to the input folder.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def vm_hwm_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflows", nargs="+")
    ap.add_argument("--comfy-dir", default="/work/ref/ComfyUI")
    ap.add_argument("--python", default="/work/ref/venv/bin/python")
    ap.add_argument("--shared-parity", default="/work/shared/parity", help="folder with client.py, gen_test_image.py")
    ap.add_argument("--models-dir", required=True, help="folder with checkpoints/")
    ap.add_argument("--out", required=True, help="where <stem>.png goes")
    ap.add_argument("--work", default="/tmp/comfy_run_sdxl")
    ap.add_argument("--port", type=int, default=8191)
    ap.add_argument("--flag", action="append", default=[], help="extra ComfyUI argument (repeatable)")
    ap.add_argument("--t5xxl-layers", type=int, default=0,
                    help="build T5-XXL with this many blocks (ComfyUI's t5xxl_model_config; comfy_main_flux_t5layers.py)")
    ap.add_argument("--set", action="append", default=[], help="passed to client.py for every workflow")
    opts = ap.parse_args()

    work = os.path.abspath(opts.work)
    shutil.rmtree(work, ignore_errors=True)
    for d in ("input", "output", "temp", "user"):
        os.makedirs(os.path.join(work, d))
    os.makedirs(opts.out, exist_ok=True)
    subprocess.run([sys.executable, os.path.join(opts.shared_parity, "gen_test_image.py"),
                    os.path.join(work, "input", "comfyrs_test_256.png")], check=True)
    emp = os.path.join(work, "extra_model_paths.yaml")
    with open(emp, "w") as f:
        f.write("sdxlparity:\n    base_path: %s\n    checkpoints: checkpoints\n    controlnet: controlnet\n"
                "    diffusion_models: diffusion_models\n    text_encoders: text_encoders\n    vae: vae\n"
                "    loras: loras\n" % os.path.abspath(opts.models_dir))
    main = ["main.py"]
    if opts.t5xxl_layers:
        main = [os.path.join(HERE, "comfy_main_flux_t5layers.py"), str(opts.t5xxl_layers)]
    cmd = [opts.python] + main + ["--cpu", "--force-fp32", "--fp32-text-enc", "--listen", "127.0.0.1",
           "--port", str(opts.port), "--disable-auto-launch", "--disable-api-nodes", "--disable-all-custom-nodes",
           "--extra-model-paths-config", emp, "--input-directory", os.path.join(work, "input"),
           "--output-directory", os.path.join(work, "output"), "--temp-directory", os.path.join(work, "temp"),
           "--user-directory", os.path.join(work, "user"), "--database-url", "sqlite:///:memory:"] + opts.flag
    log_path = os.path.join(work, "server.log")
    log = open(log_path, "w")
    t0 = time.time()
    server = subprocess.Popen(cmd, cwd=opts.comfy_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = "http://127.0.0.1:%d" % opts.port
    result = {"command": " ".join(cmd), "flags": opts.flag, "cases": []}
    try:
        while True:
            if server.poll() is not None:
                sys.exit("ComfyUI exited: see %s" % log_path)
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        result["server_ready_s"] = round(time.time() - t0, 1)
        for wf in opts.workflows:
            stem = os.path.splitext(os.path.basename(wf))[0]
            dl = os.path.join(work, "dl", stem)
            cmd_c = [sys.executable, os.path.join(opts.shared_parity, "client.py"), "--server", url, wf,
                     "--out", dl, "--prefix", stem]
            for s in opts.set:
                cmd_c += ["--set", s]
            start = time.time()
            out = subprocess.run(cmd_c, capture_output=True, text=True)
            done = time.time()
            try:
                info = json.loads(out.stdout)
            except ValueError:
                info = {"status": "failed", "error": out.stdout + out.stderr}
            case = {"workflow": stem, "status": info.get("status"), "wall_s": round(done - start, 1),
                    "since_server_start_s": round(done - t0, 1),
                    "server_execution_s": info.get("server_execution_seconds")}
            if info.get("status") == "success" and info.get("outputs"):
                dst = os.path.join(opts.out, stem + ".png")
                shutil.copyfile(info["outputs"][0]["path"], dst)
                case["png"] = dst
            else:
                case["error"] = info.get("error") or info
            result["cases"].append(case)
            print(json.dumps(case), file=sys.stderr, flush=True)
        result["peak_rss_gib"] = round((vm_hwm_kib(server.pid) or 0) / 2 ** 20, 2)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    with open(log_path) as f:
        text = f.read()
    # tqdm writes '\r'-separated updates: keep the last s/it or it/s figure of each progress bar line
    rates = re.findall(r"(\d+)/(\d+) \[[^\]]*?, *([0-9.]+)(s/it|it/s)\]", text)
    result["tqdm"] = [("%s/%s %s %s" % r) for r in rates]
    result["server_log"] = log_path
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
