#!/usr/bin/env python3
"""CPU benchmark of one SD1.5 workflow with comfyrs (figures for BENCHMARKS.md).

    python3 scripts/bench_sd15.py --comfyrs target/release/comfyrs \
        --models-dir DIR_WITH_checkpoints/ workflows/sd15/bench_sd15_256_euler20.json

1. Cold, from process start: `comfyrs run WORKFLOW --json-events` under /usr/bin/time -v.
   Every event line is time-stamped as it arrives, which gives the checkpoint load time (the
   CheckpointLoaderSimple node), seconds per sampler step (between `progress` events), the
   VAE decode, time to first image (process start -> the SaveImage node's `executed`) and the
   peak RSS.
2. Warm: `comfyrs serve`, the workflow queued once (cold, loads the model) and then again with
   only the KSampler seed changed (loader and text encodes come from the cache, like ComfyUI's
   warm re-run); wall time of the second prompt (POST -> history entry) and the server's VmHWM.

Prints one JSON object. Standard library only; Linux (reads /proc).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request


def load_avg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user + system CPU seconds of a process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError):
        return 0.0


def rss_gib(pid):
    """Current resident set size of a process in GiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024 / 1024
    except (OSError, AttributeError):
        return None


def child_pid(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
        return int(kids[0]) if kids else None
    except OSError:
        return None


def cold_run(exe, workflow, models_dir, out_dir):
    wf = json.load(open(workflow))
    loader = next(k for k, v in wf.items() if v["class_type"] == "CheckpointLoaderSimple")
    saver = next(k for k, v in wf.items() if v["class_type"] == "SaveImage")
    sampler = next(k for k, v in wf.items() if v["class_type"].startswith("KSampler"))
    cmd = ["/usr/bin/time", "-v", exe, "run", workflow, "--models-dir", models_dir,
           "--output-dir", out_dir, "--json-events"]
    load_before = load_avg()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    cpu = []  # CPU seconds of the comfyrs process at each event
    rss = []  # its resident memory at each event
    worker = None
    for line in p.stdout:
        t = time.monotonic() - t0
        worker = worker or child_pid(p.pid)
        try:
            events.append((t, json.loads(line)))
            cpu.append(cpu_seconds(worker) if worker else 0.0)
            rss.append(rss_gib(worker) if worker else None)
        except ValueError:
            pass
    err = p.stderr.read()
    p.wait()
    total = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("comfyrs run failed:\n" + err)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))

    def start_of(node):
        return next(t for t, e in events if e["type"] == "executing" and e["data"].get("node") == node)

    def after(node):
        s = start_of(node)
        return next(t for t, e in events if t >= s and e["type"] in ("executing", "executed")
                    and e["data"].get("node") != node)

    steps = [t for t, e in events if e["type"] == "progress" and e["data"].get("node") == sampler]
    step_cpu = [c for (t, e), c in zip(events, cpu) if e["type"] == "progress" and e["data"].get("node") == sampler]
    step_cpu_times = [b - a for a, b in zip(step_cpu, step_cpu[1:])]
    first_image = next(t for t, e in events if e["type"] == "executed" and e["data"].get("node") == saver)
    step_times = [b - a for a, b in zip(steps, steps[1:])]
    decode = [k for k, v in wf.items() if v["class_type"] == "VAEDecode"][0]
    loaded_at = after(loader)
    rss_loaded = next((r for (t, e), r in zip(events, rss) if t >= loaded_at), None)
    return {
        "load_before": load_before,
        "load_after": load_avg(),
        "checkpoint_load_s": round(after(loader) - start_of(loader), 2),
        "sampler_s": round(after(sampler) - start_of(sampler), 2),
        "steps": len(steps),
        "s_per_step_mean": round(sum(step_times) / max(1, len(step_times)), 3),
        "s_per_step_min": round(min(step_times), 3) if step_times else None,
        "cpu_s_per_step_mean": round(sum(step_cpu_times) / max(1, len(step_cpu_times)), 3),
        "vae_decode_s": round(after(decode) - start_of(decode), 2),
        "time_to_first_image_s": round(first_image, 2),
        "process_wall_s": round(total, 2),
        "peak_rss_gib": round(rss_kb / 1024 / 1024, 3),
        # VmRSS at the first event after the checkpoint loader finished: the loaded model
        "rss_after_checkpoint_load_gib": round(rss_loaded, 3) if rss_loaded is not None else None,
    }


def http(addr, path, body=None):
    req = urllib.request.Request(f"http://{addr}{path}", data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def queue_and_wait(addr, prompt):
    t = time.monotonic()
    pid = http(addr, "/prompt", {"prompt": prompt})["prompt_id"]
    while True:
        h = http(addr, f"/history/{pid}")
        if pid in h:
            st = h[pid]["status"]
            if st.get("status_str") != "success":
                sys.exit(f"prompt failed: {st}")
            return time.monotonic() - t
        time.sleep(0.05)


def warm_run(exe, workflow, models_dir, data_dir):
    wf = json.load(open(workflow))
    sampler = next(k for k, v in wf.items() if v["class_type"].startswith("KSampler"))
    p = subprocess.Popen([exe, "serve", "--port", "0", "--data-dir", data_dir, "--models-dir", models_dir],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        addr = None
        for line in p.stderr:
            m = re.search(r"listening on http://(\S+)", line)
            if m:
                addr = m.group(1)
                break
        first = queue_and_wait(addr, wf)
        wf[sampler]["inputs"]["seed"] = int(wf[sampler]["inputs"]["seed"]) + 1
        load_before = load_avg()
        second = queue_and_wait(addr, wf)
        with open(f"/proc/{p.pid}/status") as f:
            hwm = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))
        return {"first_prompt_s": round(first, 2), "warm_rerun_new_seed_s": round(second, 2),
                "load_before": load_before, "load_after": load_avg(),
                "server_peak_rss_gib": round(hwm / 1024 / 1024, 3)}
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow")
    ap.add_argument("--comfyrs", default="target/release/comfyrs")
    ap.add_argument("--models-dir", required=True, help="folder with checkpoints/sd15_random.safetensors")
    ap.add_argument("--skip-warm", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = {"workflow": os.path.basename(args.workflow), "nproc": os.cpu_count(),
               "cold_cli": cold_run(args.comfyrs, args.workflow, args.models_dir, os.path.join(tmp, "out"))}
        if not args.skip_warm:
            res["serve"] = warm_run(args.comfyrs, args.workflow, args.models_dir, os.path.join(tmp, "serve"))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
