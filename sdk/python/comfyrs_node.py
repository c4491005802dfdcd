"""Python SDK for the comfyrs node protocol, version 1 (docs/node-protocol.md).

Standard library only. A pack is a script that declares nodes and calls ``pack.run()``;
comfyrs starts it, talks to it over stdin/stdout (or the Unix socket named by
``COMFYRS_NODE_SOCKET``), and runs its nodes inside workflows::

    from comfyrs_node import Pack

    pack = Pack("my_pack", version="1.0")

    @pack.node("Shout", inputs={"required": {"text": ("STRING", {"default": "hi"})}},
               outputs=[("STRING", "text")], category="text")
    def shout(ctx, text):
        return (text.upper() + "!",)

    if __name__ == "__main__":
        pack.run()

Values a node function receives and returns:

* INT, FLOAT, STRING, BOOLEAN, combos: Python values.
* IMAGE ``[B,H,W,C]`` and MASK ``[B,H,W]``: :class:`Tensor` (float32, row-major).
* LATENT: ``{"samples": Tensor, "noise_mask": Tensor (optional), "batch_index": [int] (optional)}``.
* Any other declared output type: the object stays in this process and comfyrs gets a handle;
  when that handle comes back as an input the node receives the object again.

The function returns a tuple with one value per output, or a dict
``{"result": (...), "ui": {...}}``. It may call ``ctx.progress(value, max)`` and
``ctx.check_interrupt()``; both raise :class:`Interrupted` once comfyrs asks to stop.
Anything printed goes to comfyrs' log (over stdio, stdout is kept for the protocol).
"""

import json
import os
import queue
import socket
import struct
import sys
import threading
import traceback
import uuid
from array import array

PROTOCOL = 1
TENSOR_KINDS = {"IMAGE": "image", "MASK": "mask", "LATENT": "latent"}
PLAIN_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "*"}


class Interrupted(Exception):
    """Raised inside a node once comfyrs has asked the run to stop."""


class Tensor:
    """A float32 tensor: ``shape`` (list of ints) and ``data`` (``array('f')``, row-major)."""

    def __init__(self, shape, data=None):
        self.shape = list(shape)
        n = 1
        for d in self.shape:
            n *= d
        if data is None:
            data = array("f", bytes(4 * n))
        elif not isinstance(data, array):
            data = array("f", data)
        if len(data) != n:
            raise ValueError(f"{len(data)} values do not fill shape {self.shape}")
        self.data = data

    def __repr__(self):
        return f"Tensor{self.shape}"


# --- safetensors files ---------------------------------------------------------------------

_DTYPES = {"F32": ("f", 4), "F64": ("d", 8)}


def read_safetensors(path):
    """Returns ``({name: Tensor}, metadata)`` for a file in safetensors layout."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        code = _DTYPES.get(info["dtype"])
        if code is None:
            raise ValueError(f"tensor '{name}' has dtype {info['dtype']}; expected F32")
        start, end = info["data_offsets"]
        data = array(code[0])
        data.frombytes(raw[base + start : base + end])
        if sys.byteorder != "little":
            data.byteswap()
        if code[0] != "f":
            data = array("f", data)
        out[name] = Tensor(info["shape"], data)
    return out, meta


def write_safetensors(path, tensors, metadata=None):
    """Writes ``{name: Tensor}`` (float32) in safetensors layout."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    blobs = []
    for name, t in tensors.items():
        data = t.data if t.data.typecode == "f" else array("f", t.data)
        if sys.byteorder != "little":
            data = array("f", data)
            data.byteswap()
        blob = data.tobytes()
        header[name] = {"dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    tmp = f"{path}.part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# --- framing -------------------------------------------------------------------------------


def read_frame(stream):
    """One message, or None at the end of the stream."""
    head = stream.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise EOFError("truncated frame")
    (n,) = struct.unpack("<I", head)
    body = stream.read(n)
    if len(body) < n:
        raise EOFError("truncated frame")
    return json.loads(body)


def write_frame(stream, msg):
    body = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()
    stream.write(struct.pack("<I", len(body)) + body)
    stream.flush()


# --- the host loop -------------------------------------------------------------------------


class Context:
    """What a running node sees: its ids, hidden inputs, progress and interrupts."""

    def __init__(self, host, msg):
        self._host = host
        self._id = msg["id"]
        self.node_id = msg.get("node_id")
        self.prompt_id = msg.get("prompt_id")
        self.class_type = msg.get("class")
        self.hidden = msg.get("hidden") or {}

    def check_interrupt(self):
        if self._host._interrupt.is_set():
            raise Interrupted()

    def progress(self, value, max):
        self._host.send({"type": "progress", "id": self._id, "value": value, "max": max})
        self.check_interrupt()

    def send_sync(self, event, data, broadcast=False):
        """A message for the frontend, ``{"type": event, "data": data}`` over comfyrs'
        WebSocket: to the prompt's client, or to every client with ``broadcast``."""
        self._host.send({"type": "send_sync", "id": self._id, "event": str(event),
                         "data": json.loads(json.dumps(data, default=str)),
                         "broadcast": bool(broadcast)})


class Host:
    """The protocol loop. Subclasses (or :class:`Pack`) provide ``list_nodes()`` and
    ``execute(ctx, class_type, inputs)``."""

    name = "host"
    version = "0"
    language = "python"

    def __init__(self):
        self._interrupt = threading.Event()
        self._objects = {}
        self._out = None
        self._lock = threading.Lock()
        self.exchange_dir = os.environ.get("COMFYRS_EXCHANGE_DIR", ".")
        self.paths = {}

    # Overridden by hosts.
    def list_nodes(self):
        """``{"nodes": {class: object_info entry}, "unavailable": {class: reason},
        "extra": {class: {"input_is_list": bool, "not_idempotent": bool}}}``."""
        return {"nodes": {}}

    def execute(self, ctx, class_type, inputs):
        raise NotImplementedError

    def output_types(self, class_type):
        """The declared output types of a class (to know what to turn into handles)."""
        return []

    def fingerprint(self, class_type, inputs):
        """ComfyUI's IS_CHANGED for classes declared with ``"fingerprint": true`` in
        ``extra``: a JSON value (outputs are reused while it stays the same), or
        ``float("nan")`` for "always run again"."""
        return None

    def check_lazy_status(self, ctx, class_type, inputs):
        """ComfyUI's ``check_lazy_status`` for classes declared with
        ``"check_lazy_status": true`` in ``extra``: called before ``execute`` with the inputs
        available so far (a lazy input whose producer has not run is absent); returns the
        names of the lazy inputs the node needs. comfyrs runs their producers and asks again."""
        return []

    def on_hello(self, msg):
        pass

    # Value conversion.
    def decode(self, v):
        if isinstance(v, dict):
            if "$list" in v:
                return [self.decode(x) for x in v["$list"]]
            ref = v.get("$ref")
            if ref == "handle":
                key = json.dumps(v["id"])
                if key not in self._objects:
                    raise KeyError(f"unknown handle {v['id']}")
                return self._objects[key]
            if ref in ("image", "mask"):
                tensors, _ = self.read_tensors(v["path"])
                return tensors[ref]
            if ref == "latent":
                tensors, meta = self.read_tensors(v["path"])
                out = {"samples": tensors["samples"]}
                if "noise_mask" in tensors:
                    out["noise_mask"] = tensors["noise_mask"]
                if "batch_index" in meta:
                    out["batch_index"] = json.loads(meta["batch_index"])
                return out
        return v

    def encode(self, v, ty):
        kind = TENSOR_KINDS.get(ty)
        path = os.path.join(self.exchange_dir, f"out-{uuid.uuid4().hex}.safetensors")
        if kind == "latent":
            tensors = {"samples": v["samples"]}
            if v.get("noise_mask") is not None:
                tensors["noise_mask"] = v["noise_mask"]
            meta = {}
            if v.get("batch_index") is not None:
                meta["batch_index"] = json.dumps(list(v["batch_index"]))
            self.write_tensors(path, tensors, meta)
            return {"$ref": "latent", "path": path}
        if kind:
            self.write_tensors(path, {kind: v})
            return {"$ref": kind, "path": path}
        if ty in PLAIN_TYPES or v is None or isinstance(v, (bool, int, float, str)):
            return v
        hid = uuid.uuid4().hex
        self._objects[json.dumps(hid)] = v
        return {"$ref": "handle", "id": hid, "type": ty}

    def validate_inputs(self, class_type, inputs):
        """ComfyUI's VALIDATE_INPUTS for classes declared with ``"validate_inputs"`` in their
        extra: True (or None) when valid, else False or the reason."""
        return True

    # Tensor files; hosts with torch override these.
    def read_tensors(self, path):
        return read_safetensors(path)

    def write_tensors(self, path, tensors, metadata=None):
        write_safetensors(path, tensors, metadata)

    def send(self, msg):
        with self._lock:
            write_frame(self._out, msg)

    def log(self, message, level="info"):
        self.send({"type": "log", "level": level, "message": str(message)})

    def _reader(self, stream, requests):
        try:
            while True:
                msg = read_frame(stream)
                if msg is None:
                    break
                kind = msg.get("type")
                if kind == "interrupt":
                    self._interrupt.set()
                elif kind == "release":
                    for h in msg.get("handles", []):
                        self._objects.pop(json.dumps(h), None)
                else:
                    requests.put(msg)
        finally:
            requests.put(None)

    def _handle(self, msg):
        kind = msg.get("type")
        rid = msg.get("id")
        if kind == "hello":
            self.exchange_dir = msg.get("exchange_dir", self.exchange_dir)
            self.paths = msg.get("paths", {})
            self.on_hello(msg)
            info = {"name": self.name, "version": self.version, "language": self.language}
            return {"type": "hello", "id": rid, "protocol": PROTOCOL, "host": info}
        if kind == "list_nodes":
            reply = {"type": "nodes", "id": rid}
            reply.update(self.list_nodes())
            return reply
        if kind == "execute":
            self._interrupt.clear()
            ctx = Context(self, msg)
            try:
                inputs = {k: self.decode(v) for k, v in (msg.get("inputs") or {}).items()}
                out = self.execute(ctx, msg["class"], inputs)
                ui = None
                if isinstance(out, dict):
                    ui = out.get("ui")
                    out = out.get("result", ())
                out = tuple(out or ())
                types = self.output_types(msg["class"])
                outputs = [self.encode(v, types[i] if i < len(types) else "*") for i, v in enumerate(out)]
                reply = {"type": "result", "id": rid, "outputs": outputs}
                if ui is not None:
                    reply["ui"] = ui
                return reply
            except Interrupted:
                return {"type": "interrupted", "id": rid}
            except Exception as e:  # the node's failure, reported as ComfyUI reports it
                return {
                    "type": "error",
                    "id": rid,
                    "message": str(e),
                    "exception_type": type(e).__name__,
                    "traceback": traceback.format_exc(),
                }
        if kind == "check_lazy_status":
            ctx = Context(self, msg)
            try:
                inputs = {k: self.decode(v) for k, v in (msg.get("inputs") or {}).items()}
                needed = self.check_lazy_status(ctx, msg["class"], inputs) or []
                return {"type": "lazy_status", "id": rid, "needed": [str(n) for n in needed]}
            except Exception as e:  # reported as the node's failure, as in ComfyUI
                return {
                    "type": "error",
                    "id": rid,
                    "message": str(e),
                    "exception_type": type(e).__name__,
                    "traceback": traceback.format_exc(),
                }
        if kind == "validate_inputs":
            try:
                inputs = {k: self.decode(v) for k, v in (msg.get("inputs") or {}).items()}
                result = self.validate_inputs(msg["class"], inputs)
            except Exception as e:  # ComfyUI reports it as the validation's exception
                return {"type": "error", "id": rid, "message": str(e),
                        "exception_type": type(e).__name__}
            if result is True or result is None:
                return {"type": "validation", "id": rid, "ok": True}
            return {"type": "validation", "id": rid, "ok": False,
                    "reason": "" if result is False else str(result)}
        if kind == "fingerprint":
            try:
                value = self.fingerprint(msg["class"], msg.get("inputs") or {})
            except Exception as e:
                return {"type": "error", "id": rid, "message": str(e), "exception_type": type(e).__name__}
            if isinstance(value, float) and value != value:
                return {"type": "fingerprint", "id": rid, "always": True}
            return {"type": "fingerprint", "id": rid, "value": json.loads(json.dumps(value, default=str))}
        if kind == "shutdown":
            raise SystemExit(0)
        return {"type": "error", "id": rid, "message": f"unknown request type {kind!r}",
                "exception_type": "ProtocolError"}

    def run(self):
        """Serves requests until comfyrs closes the connection: stdin/stdout, or the Unix
        socket named by ``COMFYRS_NODE_SOCKET`` (``--node-host-transport unix``)."""
        path = os.environ.get("COMFYRS_NODE_SOCKET")
        if path:
            # The socket carries the protocol; stdout stays free (comfyrs logs it).
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            self._out = sock.makefile("wb")
            stdin = sock.makefile("rb")
        else:
            # The protocol owns the real stdout; print() and library chatter go to stderr.
            self._out = os.fdopen(os.dup(1), "wb")
            os.dup2(2, 1)
            sys.stdout = sys.stderr
            stdin = os.fdopen(os.dup(0), "rb")
        requests = queue.Queue()
        threading.Thread(target=self._reader, args=(stdin, requests), daemon=True).start()
        while True:
            msg = requests.get()
            if msg is None:
                return
            try:
                reply = self._handle(msg)
            except SystemExit:
                return
            self.send(reply)


def _object_info(name, inputs, outputs, category, display_name, description, output_node,
                 output_is_list):
    entry_inputs, order = {}, {}
    for section in ("required", "optional", "hidden"):
        spec = (inputs or {}).get(section)
        if spec is None:
            continue
        entry_inputs[section] = {}
        for key, value in spec.items():
            if section == "hidden":
                entry_inputs[section][key] = value
            else:
                # ComfyUI's form: (TYPE,) or (TYPE, options); TYPE is a name or a list of choices.
                if not isinstance(value, (tuple, list)) or len(value) not in (1, 2):
                    raise ValueError(f"node {name}: input {key} must be (TYPE,) or (TYPE, options)")
                entry_inputs[section][key] = [value[0]] + ([dict(value[1])] if len(value) == 2 else [])
        order[section] = list(spec.keys())
    if "required" not in entry_inputs:
        entry_inputs["required"] = {}
        order["required"] = []
    outs = [o if isinstance(o, (tuple, list)) else (o, o) for o in outputs]
    return {
        "input": entry_inputs,
        "input_order": order,
        "output": [o[0] for o in outs],
        "output_is_list": list(output_is_list or [False] * len(outs)),
        "output_name": [o[1] for o in outs],
        "name": name,
        "display_name": display_name or name,
        "description": description,
        "category": category,
        "output_node": output_node,
    }


class Pack(Host):
    """Nodes declared with :meth:`node` and served by :meth:`run`."""

    def __init__(self, name, version="0"):
        super().__init__()
        self.name = name
        self.version = version
        self._nodes = {}
        self._lazy = {}

    def node(self, name, inputs=None, outputs=(), category="", display_name=None, description="",
             output_node=False, output_is_list=None, input_is_list=False, not_idempotent=False,
             check_lazy_status=None):
        """Declares a node. ``inputs`` is ComfyUI's INPUT_TYPES dict, e.g.
        ``{"required": {"n": ("INT", {"default": 1}), "mode": (["a", "b"],)}}``; ``outputs`` is
        a list of ``(TYPE, name)`` pairs (or bare type names). Inputs declared with
        ``{"lazy": True}`` run only when ``check_lazy_status(ctx, **inputs)`` names them."""

        def register(fn):
            info = _object_info(name, inputs, outputs, category, display_name, description,
                                output_node, output_is_list)
            extra = {"input_is_list": input_is_list, "not_idempotent": not_idempotent,
                     "check_lazy_status": check_lazy_status is not None}
            self._nodes[name] = (fn, info, extra)
            if check_lazy_status is not None:
                self._lazy[name] = check_lazy_status
            return fn

        return register

    def list_nodes(self):
        return {
            "nodes": {n: info for n, (_, info, _) in self._nodes.items()},
            "extra": {n: extra for n, (_, _, extra) in self._nodes.items()},
        }

    def output_types(self, class_type):
        return self._nodes[class_type][1]["output"]

    def execute(self, ctx, class_type, inputs):
        fn = self._nodes[class_type][0]
        return fn(ctx, **inputs)

    def check_lazy_status(self, ctx, class_type, inputs):
        fn = self._lazy.get(class_type)
        return fn(ctx, **inputs) if fn else []
