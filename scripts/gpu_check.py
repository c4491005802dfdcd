#!/usr/bin/env python3
"""The GPU check of comfyrs (docs/gpu.md): correctness and speed of a `--features cuda` build.

Runs on a machine with an NVIDIA GPU, from the repository root, with what
`scripts/gpu_prepare.sh` put under .device/ (the stripped cuda binary and copies of the
parity files). Standard library only; python3 of the device machine (PyTorch's CUDA 13 wheels
provide the CUDA libraries the binary links against).

  python3 scripts/gpu_check.py                 # everything, results under $OUT
  python3 scripts/gpu_check.py --device cpu --skip-full   # dry run of the tiny part on a CPU

Stages (each writes results.json and summary.md again, so a timeout keeps what finished):
  1. tiny: workflows/tiny_txt2img.json on the fixture checkpoint: cpu fp32 (the reference),
     then on the device in fp32, the device default (fp16 UNet/CLIP, bf16 VAE), bf16 and fp16
     everywhere; each image compared with the cpu fp32 one.
  2. parity: the full-size random SD1.5 checkpoint (regenerated here by gen_sd15.py, numpy
     only, in the background while stage 1 runs), sd15_txt2img.json (256x256, euler 4 steps)
     in fp32 and the default dtypes, compared with ComfyUI's CPU fp32 reference PNG.
  3. bench: bench_sd15_512_euler20.json in the default dtypes twice (the first run also pays
     for loading the PTX kernels and reading the file), bench_sd15_256_euler20.json once, and
     512 in fp32 once: time to first image from process start, model load, warm it/s, peak
     RSS and peak GPU memory (nvidia-smi).
"""
import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SD15_SHA256 = "17e528949994d8fefb98692e99529cd488531b8b50ac4c240582aeb473850cbc"
# The parity bar of the issue (CPU fp32 vs ComfyUI): mean |d| <= 0.5, max |d| <= 4 levels.
FP32_BAR = (0.5, 4)
CUDA_LIBS = ["libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13", "libcurand.so.10",
             "libnvrtc.so.13"]


LOG = []  # the open log file, once the output folder is known


def log(msg):
    line = "%s %s" % (time.strftime("%H:%M:%S"), msg)
    print(line, flush=True)
    for f in LOG:
        f.write(line + "\n")
        f.flush()


def cuda_lib_dirs():
    """Folders of PyTorch's NVIDIA wheels that hold the CUDA 13 libraries the binary needs."""
    try:
        import nvidia  # the namespace package of the nvidia-* wheels
        bases = list(nvidia.__path__)
    except ImportError:
        bases = []
    dirs = []
    for base in bases:
        for name in CUDA_LIBS:
            for p in glob.glob(os.path.join(base, "**", name), recursive=True):
                d = os.path.dirname(p)
                if d not in dirs:
                    dirs.append(d)
    # The driver's libcuda.so.1, where the loader would not find it by itself.
    for d in ["/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu"]:
        if os.path.exists(os.path.join(d, "libcuda.so.1")) and d not in dirs:
            dirs.append(d)
    return dirs


class GpuMemory:
    """Peak `memory.used` of GPU 0 while a run lasts, sampled by nvidia-smi every 100 ms."""

    def __init__(self, enabled):
        self.peak_mib = None
        self.proc = None
        if enabled and shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                 "-i", "0", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                v = int(line.strip())
            except ValueError:
                continue
            self.peak_mib = v if self.peak_mib is None else max(self.peak_mib, v)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.thread.join(timeout=2)
        return self.peak_mib


class Check:
    def __init__(self, args):
        self.a = args
        self.out = args.out
        self.work = args.work
        self.results = {"device": args.device, "stages": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.env = dict(os.environ)
        self.env.setdefault("RUST_LOG", "warn")
        os.makedirs(self.out, exist_ok=True)
        os.makedirs(self.work, exist_ok=True)
        LOG.append(open(os.path.join(self.out, "log.txt"), "a"))

    # ------------------------------------------------------------------ plumbing

    def save(self):
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1)
        with open(os.path.join(self.out, "summary.md"), "w") as f:
            f.write(self.summary())

    def record(self, stage, label, value):
        self.results["stages"].setdefault(stage, {})[label] = value
        self.save()

    def sh(self, cmd, timeout=60):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
            return (p.stdout + p.stderr).strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            return "(%s)" % e

    def compare(self, a, b):
        p = subprocess.run([sys.executable, os.path.join(self.a.parity, "compare.py"), a, b],
                           capture_output=True, text=True)
        try:
            return json.loads(p.stdout)
        except ValueError:
            return {"error": (p.stdout + p.stderr).strip()}

    def run(self, label, workflow, models, device, dtype=None, vae_dtype=None, sets=(),
            timeout=300):
        """One timed `comfyrs run --json-events`; returns its figures and the saved PNG."""
        out_dir = os.path.join(self.work, "out", label)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        cmd = [self.a.bin, "run", workflow, "--models-dir", models, "--output-dir", out_dir,
               "--device", device, "--json-events"]
        if dtype:
            cmd += ["--dtype", dtype]
        if vae_dtype:
            cmd += ["--vae-dtype", vae_dtype]
        for s in sets:
            cmd += ["--set", s]
        with open(workflow) as f:
            wf = json.load(f)
        wf = wf.get("prompt", wf)
        classes = {k: v.get("class_type") for k, v in wf.items()}
        gpu = GpuMemory(device != "cpu")
        log("run %s: %s" % (label, " ".join(cmd[1:])))
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env)
        events = []
        stderr = []
        err_thread = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
        err_thread.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        for line in proc.stdout:
            t = time.monotonic() - t0
            line = line.strip()
            if line.startswith("{"):
                try:
                    events.append((t, json.loads(line)))
                except ValueError:
                    pass
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        timer.cancel()
        err_thread.join(timeout=2)
        total = time.monotonic() - t0
        r = {"cmd": " ".join(cmd[1:]), "exit": proc.returncode, "total_s": round(total, 3),
             "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "gpu_peak_mib": gpu.stop()}
        if proc.returncode != 0:
            r["stderr"] = "".join(stderr)[-3000:]
            log("  FAILED (exit %s): %s" % (proc.returncode, r["stderr"][-1500:]))
            return r, None
        # Per-node wall time: from its `executing` to the next one.
        node_s = {}
        execs = [(t, e["data"]["node"]) for t, e in events if e.get("type") == "executing"]
        for (t, n), (t_next, _) in zip(execs, execs[1:]):
            if n is not None:
                node_s["%s %s" % (n, classes.get(n, "?"))] = round(t_next - t, 3)
        r["node_s"] = node_s
        loads = [v for k, v in node_s.items() if "Loader" in k]
        if loads:
            r["model_load_s"] = loads[0]
        steps = [t for t, e in events if e.get("type") == "progress"]
        if steps:
            r["steps"] = len(steps)
            start = [t for t, n in execs if n is not None and "Sampler" in (classes.get(n) or "")]
            if start:
                r["first_step_s"] = round(steps[0] - start[0], 3)
            if len(steps) > 1:
                warm = (len(steps) - 1) / (steps[-1] - steps[0])
                r["warm_it_per_s"] = round(warm, 3)
                r["warm_s_per_step"] = round(1 / warm, 4)
        saved = [t for t, e in events if e.get("type") == "executed"
                 and "images" in (e["data"].get("output") or {})]
        if saved:
            r["first_image_s"] = round(saved[0], 3)
        pngs = sorted(glob.glob(os.path.join(out_dir, "**", "*.png"), recursive=True))
        log("  ok in %.1f s: %s" % (total, {k: r[k] for k in r if k.endswith(("_s", "_per_s", "_mib"))}))
        return r, (pngs[0] if pngs else None)

    # ------------------------------------------------------------------ stages

    def stage_info(self):
        info = {"bin_bytes": os.path.getsize(self.a.bin), "version": self.sh([self.a.bin, "--version"])}
        if self.a.device != "cpu":
            dirs = cuda_lib_dirs()
            self.env["LD_LIBRARY_PATH"] = ":".join(dirs + [p for p in [os.environ.get("LD_LIBRARY_PATH")] if p])
            info["ld_library_path"] = self.env["LD_LIBRARY_PATH"]
            info["gpu"] = self.sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                   "--format=csv,noheader"])
        ldd = self.sh(["ldd", self.a.bin])
        info["ldd_missing"] = [l.strip() for l in ldd.splitlines() if "not found" in l]
        info["ldd"] = [l.strip() for l in ldd.splitlines()
                       if any(k in l for k in ("cuda", "cublas", "curand", "nvrtc"))]
        self.results["info"] = info
        self.save()
        log("info: %s" % json.dumps(info, indent=1))
        if info["ldd_missing"]:
            log("missing libraries, stopping: %s" % info["ldd_missing"])
            return False
        return True

    def start_checkpoint(self):
        """Regenerates the full-size checkpoint in the background (about 1.5 min, numpy)."""
        if self.a.ckpt:
            self.models = os.path.dirname(os.path.dirname(os.path.abspath(self.a.ckpt)))
            self.gen = None
            return
        self.models = os.path.join(self.work, "models")
        path = os.path.join(self.models, "checkpoints", "sd15_random.safetensors")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            self.gen = None
            return
        log("generating %s in the background" % path)
        self.gen_log = open(os.path.join(self.work, "gen_sd15.log"), "w")
        self.gen_t0 = time.monotonic()
        self.gen = subprocess.Popen([sys.executable, os.path.join(self.a.parity, "gen_sd15.py"),
                                     path + ".part"], stdout=self.gen_log, stderr=subprocess.STDOUT)
        self.gen_path = path

    def wait_checkpoint(self):
        if self.gen is None:
            return True
        rc = self.gen.wait()
        secs = time.monotonic() - self.gen_t0
        if rc != 0:
            self.record("parity", "checkpoint", {"error": "gen_sd15.py exit %s" % rc})
            return False
        os.rename(self.gen_path + ".part", self.gen_path)
        h = hashlib.sha256()
        with open(self.gen_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        ok = h.hexdigest() == SD15_SHA256
        self.record("parity", "checkpoint", {"gen_s": round(secs, 1), "sha256_ok": ok})
        log("checkpoint generated in %.0f s, sha256 %s" % (secs, "ok" if ok else "MISMATCH " + h.hexdigest()))
        return True

    def stage_tiny(self):
        wf = os.path.join(ROOT, "workflows", "tiny_txt2img.json")
        models = os.path.join(ROOT, "fixtures", "models")
        ref, ref_png = self.run("tiny_cpu_fp32", wf, models, "cpu")
        self.record("tiny", "cpu_fp32", ref)
        if ref_png is None:
            return
        dev = self.a.device
        for label, dtype, vae in [("fp32", "fp32", "fp32"), ("default", None, None),
                                  ("bf16", "bf16", "bf16"), ("fp16", "fp16", "fp16")]:
            if dev == "cpu" and label in ("fp32", "bf16"):  # cpu fp32 is the reference; no cpu bf16
                continue
            r, png = self.run("tiny_%s_%s" % (dev.replace(":", ""), label), wf, models, dev, dtype, vae)
            if png:
                r["vs_cpu_fp32"] = self.compare(ref_png, png)
                if label == "default":
                    shutil.copy(png, os.path.join(self.out, "tiny_%s_default.png" % dev.replace(":", "")))
            self.record("tiny", "%s_%s" % (dev, label), r)

    def stage_parity(self):
        wf = os.path.join(self.a.parity, "workflows", "sd15_txt2img.json")
        ref = os.path.join(self.a.parity, "reference", "sd15_txt2img.png")
        for label, dtype, vae in [("fp32", "fp32", "fp32"), ("default", None, None)]:
            r, png = self.run("sd15_txt2img_%s" % label, wf, self.models, self.a.device, dtype, vae,
                              sets=self.a.set)
            if png:
                c = self.compare(ref, png)
                r["vs_comfyui_cpu_fp32"] = c
                if label == "fp32" and "mean_abs_diff" in c:
                    r["meets_fp32_bar"] = c["mean_abs_diff"] <= FP32_BAR[0] and c["max_abs_diff"] <= FP32_BAR[1]
                shutil.copy(png, os.path.join(self.out, "sd15_txt2img_%s.png" % label))
            self.record("parity", "sd15_txt2img_%s" % label, r)

    def stage_bench(self):
        d = self.a.device
        sets = list(self.a.set)
        if self.a.steps:
            sets.append("3.steps=%d" % self.a.steps)
        runs = [("512_default_cold", "bench_sd15_512_euler20.json", None, None),
                ("512_default_warm", "bench_sd15_512_euler20.json", None, None),
                ("256_default", "bench_sd15_256_euler20.json", None, None),
                ("512_fp32", "bench_sd15_512_euler20.json", "fp32", "fp32")]
        for label, wf, dtype, vae in runs:
            r, png = self.run("bench_" + label, os.path.join(self.a.parity, "workflows", wf),
                              self.models, d, dtype, vae, sets=sets)
            if png and label == "512_default_warm":
                shutil.copy(png, os.path.join(self.out, "bench512_default.png"))
            self.record("bench", label, r)

    # ------------------------------------------------------------------ report

    def summary(self):
        s = self.results["stages"]
        lines = ["# comfyrs GPU check (%s, started %s)" % (self.results["device"], self.results["started"]), ""]
        info = self.results.get("info", {})
        for k in ("gpu", "version", "bin_bytes", "ldd_missing"):
            if k in info:
                lines.append("- %s: %s" % (k, info[k]))
        lines.append("")

        def cmp_cells(c):
            if not c:
                return "-", "-"
            if "error" in c:
                return "error", c["error"][:60]
            return "%.4f" % c["mean_abs_diff"], "%s" % c["max_abs_diff"]

        if "tiny" in s:
            lines += ["## tiny fixture (64x64, euler 6 steps) vs cpu fp32", "",
                      "| run | exit | total s | mean abs diff | max abs diff |", "|---|---|---|---|---|"]
            for k, r in s["tiny"].items():
                m, x = cmp_cells(r.get("vs_cpu_fp32"))
                lines.append("| %s | %s | %s | %s | %s |" % (k, r.get("exit"), r.get("total_s"), m, x))
            lines.append("")
        if "parity" in s:
            lines += ["## full-size random SD1.5, sd15_txt2img (256x256, euler 4) vs ComfyUI CPU fp32", "",
                      "| run | exit | total s | mean abs diff | max abs diff | fp32 bar (0.5/4) |",
                      "|---|---|---|---|---|---|"]
            for k, r in s["parity"].items():
                if k == "checkpoint":
                    continue
                m, x = cmp_cells(r.get("vs_comfyui_cpu_fp32"))
                lines.append("| %s | %s | %s | %s | %s | %s |" % (k, r.get("exit"), r.get("total_s"), m, x,
                                                                 r.get("meets_fp32_bar", "-")))
            if "checkpoint" in s["parity"]:
                lines += ["", "checkpoint: %s" % s["parity"]["checkpoint"]]
            lines.append("")
        if "bench" in s:
            lines += ["## benchmark (euler 20 steps, cfg 7, batch of 2 per step)", "",
                      "| run | exit | first image s | model load s | first step s | warm it/s | s/step | "
                      "peak RSS MiB | peak GPU MiB |", "|---|---|---|---|---|---|---|---|---|"]
            for k, r in s["bench"].items():
                lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    k, r.get("exit"), r.get("first_image_s"), r.get("model_load_s"), r.get("first_step_s"),
                    r.get("warm_it_per_s"), r.get("warm_s_per_step"), r.get("peak_rss_mib"),
                    r.get("gpu_peak_mib")))
            lines.append("")
        return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (dry run)")
    ap.add_argument("--bin", default=os.path.join(ROOT, ".device", "comfyrs"))
    ap.add_argument("--parity", default=os.path.join(ROOT, ".device", "parity"),
                    help="copies of ../shared/parity (gen_sd15.py, sd15_layout.json, compare.py, workflows/, reference/)")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "out", "gpu_check"))
    ap.add_argument("--work", default="/tmp/comfyrs_gpu_check")
    ap.add_argument("--ckpt", help="use this sd15_random.safetensors (inside models/checkpoints/) instead of generating it")
    ap.add_argument("--skip-full", action="store_true", help="only the tiny stage")
    ap.add_argument("--steps", type=int, help="override the benchmark's 20 steps (dry runs)")
    ap.add_argument("--set", action="append", default=[], help="extra --set for the full-size runs")
    a = ap.parse_args()
    c = Check(a)
    if not c.stage_info():
        sys.exit(1)
    if not a.skip_full:
        c.start_checkpoint()
    c.stage_tiny()
    if not a.skip_full and c.wait_checkpoint():
        c.stage_parity()
        c.stage_bench()
    c.save()
    log("done; summary:\n" + c.summary())


if __name__ == "__main__":
    main()
