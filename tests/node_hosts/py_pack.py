"""Test pack for tests/node_hosts.rs, written with the stdlib Python SDK (sdk/python).

Covers every value kind and every failure the protocol must survive: tensors both ways,
opaque handles, progress and interrupts, a node error, a crash, a hang, and what the sandbox
allows (network, writing outside the exchange folder)."""

import os
import socket
import time

from comfyrs_node import Pack, Tensor

pack = Pack("pytest_pack", version="1.0")


@pack.node("PyScaleImage", inputs={"required": {"image": ("IMAGE",), "factor": ("FLOAT", {"default": 1.0, "step": 0.01})}},
           outputs=[("IMAGE", "IMAGE")], category="test")
def scale(ctx, image, factor):
    return (Tensor(image.shape, [v * factor for v in image.data]),)


@pack.node("PyIdentityImage", inputs={"required": {"image": ("IMAGE",)}}, outputs=[("IMAGE", "IMAGE")], category="test")
def identity(ctx, image):
    """Returns its input: what crossing the boundary costs, with no work (node_host_bench)."""
    return (image,)


@pack.node("PyImageToMask", inputs={"required": {"image": ("IMAGE",), "channel": (["red", "green", "blue"],)}},
           outputs=[("MASK", "MASK")], category="test")
def to_mask(ctx, image, channel):
    b, h, w, c = image.shape
    k = ["red", "green", "blue"].index(channel)
    return (Tensor([b, h, w], image.data[k::c]),)


@pack.node("PyLatentAdd", inputs={"required": {"samples": ("LATENT",), "value": ("FLOAT", {"default": 0.0})}},
           outputs=[("LATENT", "LATENT")], category="test")
def latent_add(ctx, samples, value):
    s = samples["samples"]
    out = dict(samples)
    out["samples"] = Tensor(s.shape, [v + value for v in s.data])
    out["batch_index"] = [7] * s.shape[0]
    return (out,)


@pack.node("PyStats", inputs={"required": {"image": ("IMAGE",)}, "optional": {"mask": ("MASK",)},
                              "hidden": {"unique_id": "UNIQUE_ID"}},
           outputs=[], output_node=True, category="test")
def stats(ctx, image, mask=None):
    ui = {"shape": image.shape, "sum": [sum(image.data)], "node": [ctx.hidden["unique_id"]]}
    if mask is not None:
        ui["mask_shape"] = mask.shape
        ui["mask_sum"] = [sum(mask.data)]
    return {"result": (), "ui": ui}


@pack.node("PyLatentStats", inputs={"required": {"samples": ("LATENT",)}}, outputs=[], output_node=True)
def latent_stats(ctx, samples):
    return {"ui": {"shape": samples["samples"].shape, "sum": [sum(samples["samples"].data)],
                   "batch_index": samples.get("batch_index")}}


@pack.node("PyConcat", inputs={"required": {"a": ("STRING", {"default": ""}), "b": ("STRING", {"default": ""})}},
           outputs=[("STRING", "STRING")], category="test")
def concat(ctx, a, b):
    return (a + b,)


@pack.node("PyCount", inputs={"required": {"text": ("STRING",)}}, outputs=[("INT", "length"), ("FLOAT", "half")])
def count(ctx, text):
    return (len(text), len(text) / 2)


class Thing:
    def __init__(self, label):
        self.label = label


@pack.node("PyMakeThing", inputs={"required": {"label": ("STRING", {"default": "x"})}}, outputs=[("THING", "thing")])
def make_thing(ctx, label):
    return (Thing(label),)


@pack.node("PyUseThing", inputs={"required": {"thing": ("THING",)}}, outputs=[("STRING", "STRING")])
def use_thing(ctx, thing):
    return (f"thing:{thing.label}",)


@pack.node("PyLiveObjects", inputs={"required": {"salt": ("INT", {"default": 0})}}, outputs=[("INT", "INT")])
def live_objects(ctx, salt):
    """How many handles this host keeps (comfyrs releases them when its cache drops them)."""
    return (len(pack._objects),)


@pack.node("PyFail", inputs={"required": {"value": ("INT", {"default": 0})}}, outputs=[("INT", "INT")])
def fail(ctx, value):
    raise ValueError(f"bad value {value}")


@pack.node("PyCrash", inputs={"required": {"code": ("INT", {"default": 3})}}, outputs=[("INT", "INT")])
def crash(ctx, code):
    print("about to crash", flush=True)
    os._exit(code)


@pack.node("PyHang", inputs={"required": {"seconds": ("INT", {"default": 3600})}}, outputs=[("INT", "INT")])
def hang(ctx, seconds):
    # Says it started, then ignores interrupts on purpose: only a kill ends it.
    ctx.progress(0, seconds)
    time.sleep(seconds)
    return (seconds,)


@pack.node("PySlow", inputs={"required": {"steps": ("INT", {"default": 5})}}, outputs=[("INT", "INT")])
def slow(ctx, steps):
    for i in range(steps):
        ctx.progress(i + 1, steps)
        time.sleep(0.05)
    return (steps,)


@pack.node("PyPid", inputs={"required": {"salt": ("INT", {"default": 0})}}, outputs=[("INT", "INT")])
def pid(ctx, salt):
    return (os.getpid(),)


@pack.node("PyProbe", inputs={"required": {"target": ("STRING", {"default": "/"}), "port": ("INT", {"default": 9})}},
           outputs=[("STRING", "STRING")])
def probe(ctx, target, port):
    """What this process may do: connect out, write next to its working dir, write to the
    exchange folder. Reports each as ok or the error class."""
    out = []
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        out.append("net:ok")
    except OSError as e:
        out.append(f"net:{type(e).__name__}:{e.errno}")
    for name, path in (("cwd", os.path.join(target, f"comfyrs-probe-{os.getpid()}.txt")),
                       ("exchange", os.path.join(pack.exchange_dir, "probe.txt"))):
        try:
            with open(path, "w") as f:
                f.write("x")
            os.remove(path)
            out.append(f"{name}:ok")
        except OSError as e:
            out.append(f"{name}:{type(e).__name__}")
    out.append("secret:" + os.environ.get("COMFYRS_TEST_SECRET", "absent"))
    return (" ".join(out),)


def _switch_needs(ctx, select, a=None, b=None):
    return ["a" if select == 1 else "b"]


@pack.node("PyLazySwitch",
           inputs={"required": {"select": ("INT", {"default": 1, "min": 1, "max": 2})},
                   "optional": {"a": ("STRING", {"lazy": True}), "b": ("STRING", {"lazy": True})}},
           outputs=[("STRING", "STRING")], category="test", check_lazy_status=_switch_needs)
def lazy_switch(ctx, select, a=None, b=None):
    """Only the chosen input's branch runs; the other arrives as None."""
    chosen, other = (a, b) if select == 1 else (b, a)
    return (f"{chosen} (other: {other!r})",)


@pack.node("PyNotify", inputs={"required": {"n": ("INT", {"default": 1})}}, outputs=[("INT", "INT")],
           category="test")
def notify(ctx, n):
    """Talks to its frontend extension: one message to the prompt's client, one to all."""
    ctx.send_sync("pytest.note", {"n": n, "node": ctx.node_id})
    ctx.send_sync("pytest.all", {"n": n * 2}, broadcast=True)
    return (n,)


if __name__ == "__main__":
    pack.run()
