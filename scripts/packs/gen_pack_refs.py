#!/usr/bin/env python3
"""Writes tests/data/packs/reference.json: ComfyUI's own `/object_info` entries and execute()
results of the custom-node classes comfyrs re-implements under nodes/, made by loading the
original packs in ComfyUI 0.3.64. cli/tests/packs_reference.rs compares comfyrs with it field by
field.

Set-up (nothing of this goes into the repository; the packs are GPL-3.0/MIT/Apache-2.0 code):
  * a ComfyUI 0.3.64 checkout and its venv (see /work/ref/README.txt);
  * BASE/custom_nodes/<pack> for each pack, cloned from its public repository under its usual
    folder name (ComfyUI-Custom-Scripts, ComfyUI-KJNodes, ComfyUI_essentials, rgthree-comfy,
    was-node-suite-comfyui, ComfyUI_Comfyroll_CustomNodes, ComfyUI_JPS-Nodes,
    comfy-image-saver, ComfyMath, ComfyUI-mxToolkit, cg-use-everywhere);
  * the packs' Python dependencies missing from ComfyUI's venv, e.g.
    `pip install --target DEPS numba piexif opencv-python-headless` and PYTHONPATH=DEPS.

Usage:
  PYTHONPATH=DEPS VENV/bin/python scripts/packs/gen_pack_refs.py COMFYUI_DIR BASE OUT.json

Inputs: strings, numbers and booleans are passed as they are; {"image": [B, H, W, C]} is an
IMAGE of that shape and {"mask": [B, H, W]} a MASK, zero unless "pattern" is true, then value i
(in memory order) is ((i * 37) % 101) / 100 in float32. Results: primitives as JSON, tensors as
{"shape": [...], "hex": "<float32 bits, 8 hex digits each>"} (over 4096 values: the sha256
of those bytes instead of "hex"), an exception as
{"error": "<ExceptionType>"}; images a node saved (ui "images") as their file name, subfolder,
type and the sha256 of their decoded RGB bytes.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

IMG = {"image": [2, 5, 7, 3]}
PAT = {"image": [1, 6, 9, 3], "pattern": True}

CASES = [
    ("ShowText|pysssss", {"text": ["hello", "world"]}),
    ("StringFunction|pysssss", {"action": "append", "tidy_tags": "yes", "text_a": "a,  b", "text_b": "", "text_c": "c ,, d"}),
    ("StringFunction|pysssss", {"action": "append", "tidy_tags": "no", "text_a": "x", "text_b": "y", "text_c": "z"}),
    ("StringFunction|pysssss", {"action": "replace", "tidy_tags": "no", "text_a": "the cat sat", "text_b": "cat", "text_c": "dog"}),
    ("StringFunction|pysssss", {"action": "replace", "tidy_tags": "no", "text_a": "a1b22c333", "text_b": "/([0-9]+)/", "text_c": "<\\1>"}),
    ("StringFunction|pysssss", {"action": "replace", "tidy_tags": "yes", "text_a": "red,  blue ,, green  ", "text_b": "blue", "text_c": ""}),
    ("MathExpression|pysssss", {"expression": "1 + 2 * 3"}),
    ("MathExpression|pysssss", {"expression": "a / b", "a": 7, "b": 2}),
    ("MathExpression|pysssss", {"expression": "a // b + a % b", "a": -7, "b": 2}),
    ("MathExpression|pysssss", {"expression": "round(2.5) + round(3.5) + ceil(1.2) + floor(-1.2)"}),
    ("MathExpression|pysssss", {"expression": "round(a, 2)", "a": 3.14159}),
    ("MathExpression|pysssss", {"expression": "2 ** 10 - (1 << 3) ^ 5"}),
    ("MathExpression|pysssss", {"expression": "iif(a > b, a, b) + max(1, 9, 4) - min(3, 2.5)", "a": 4, "b": 6}),
    ("MathExpression|pysssss", {"expression": "a.width * 10 + a.height", "a": IMG}),
    ("MathExpression|pysssss", {"expression": "sqrt(a) + int(7.9) + (1 < 2) + (not 0) + (1 and 0)", "a": 16}),
    ("MathExpression|pysssss", {"expression": "-a * 1.5", "a": 3}),
    ("MathExpression|pysssss", {"expression": "a / 0", "a": 1}),
    ("MathExpression|pysssss", {"expression": "x + 1"}),
    ("Text Concatenate", {"delimiter": ", ", "clean_whitespace": "true", "text_a": " a ", "text_b": "", "text_c": "c", "text_d": "   "}),
    ("Text Concatenate", {"delimiter": "\\n", "clean_whitespace": "false", "text_a": " a ", "text_c": "  "}),
    ("Text Multiline", {"text": "line one\n# a comment\n  #indented comment\nline two\n"}),
    ("Text String", {"text": "a", "text_b": "b", "text_c": "", "text_d": "d"}),
    ("CR Prompt Text", {"prompt": "a photo of a cat"}),
    ("CR Text", {"text": "some text"}),
    ("CR Seed", {"seed": 18446744073709551615}),
    ("CR Integer To String", {"int_": 1234567890123}),
    ("CR Float To String", {"float_": 0.1}),
    ("CR Float To String", {"float_": 3.0}),
    ("CR Float To String", {"float_": 123456.789}),
    ("CR Float To Integer", {"_float": -2.75}),
    ("Text Concatenate (JPS)", {"delimiter": "comma", "text1": "a", "text2": "", "text3": "c", "text5": "e"}),
    ("Text Concatenate (JPS)", {"delimiter": "space", "text2": "x", "text4": "y"}),
    ("Text Concatenate (JPS)", {"delimiter": "none", "text1": "p", "text2": "q"}),
    ("String Literal", {"string": "literal\ntext"}),
    ("Int Literal", {"int": 42}),
    ("CM_FloatBinaryOperation", {"op": "Mod", "a": -7.5, "b": 2.0}),
    ("CM_FloatBinaryOperation", {"op": "FloorDiv", "a": -7.5, "b": 2.0}),
    ("CM_FloatBinaryOperation", {"op": "Pow", "a": 2.0, "b": 0.5}),
    ("CM_FloatBinaryOperation", {"op": "Log", "a": 8.0, "b": 2.0}),
    ("CM_FloatBinaryOperation", {"op": "Atan2", "a": 1.0, "b": -1.0}),
    ("CM_FloatBinaryOperation", {"op": "Div", "a": 1.0, "b": 0.0}),
    ("CM_IntBinaryOperation", {"op": "Div", "a": -7, "b": 2}),
    ("CM_IntBinaryOperation", {"op": "Mod", "a": 7, "b": -2}),
    ("CM_IntBinaryOperation", {"op": "Nand", "a": 12, "b": 10}),
    ("CM_IntBinaryOperation", {"op": "Xnor", "a": 12, "b": 10}),
    ("CM_IntBinaryOperation", {"op": "Shl", "a": 3, "b": 4}),
    ("CM_IntBinaryOperation", {"op": "Pow", "a": 3, "b": 5}),
    ("CM_NumberBinaryOperation", {"op": "Add", "a": 2, "b": 0.25}),
    ("CM_NumberBinaryOperation", {"op": "Max", "a": 3, "b": 7}),
    ("INTConstant", {"value": -12}),
    ("FloatConstant", {"value": 0.125}),
    ("StringConstant", {"string": "const"}),
    ("StringConstantMultiline", {"string": " one\ntwo \nthree\n", "strip_newlines": True}),
    ("StringConstantMultiline", {"string": " one\ntwo \n", "strip_newlines": False}),
    ("JoinStrings", {"delimiter": "-", "string1": "left", "string2": "right"}),
    ("JoinStrings", {"delimiter": " ", "string1": "only"}),
    ("GetImageSizeAndCount", {"image": IMG}),
    ("GetImageSize+", {"image": IMG}),
    ("mxSlider", {"Xi": 7, "Xf": 2.5, "isfloatX": 0}),
    ("mxSlider", {"Xi": 7, "Xf": 2.5, "isfloatX": 1}),
    ("Seed (rgthree)", {"seed": 123456789}),
    ("Any Switch (rgthree)", {"any_01": None, "any_02": "second", "any_03": "third"}),
    ("Any Switch (rgthree)", {"any_02": 5, "any_01": "first"}),
    ("Any Switch (rgthree)", {"any_01": None}),
    ("Any Switch (rgthree)", {"other": 1, "any_04": 2.5}),
    ("Display Any (rgthree)", {"source": "text"}),
    ("Display Any (rgthree)", {"source": 3.0}),
    ("Display Any (rgthree)", {"source": True}),
    ("Display Any (rgthree)", {"source": [1, "two", 3.5, None, {"k": "v\u00e9"}]}),
]
for interp in ["nearest", "bilinear", "bicubic", "area", "nearest-exact", "lanczos"]:
    CASES.append(("ImageResize+", {"image": PAT, "width": 13, "height": 4, "interpolation": interp,
                                   "method": "stretch", "condition": "always", "multiple_of": 0}))
for method, w, h, mult in [("keep proportion", 12, 12, 0), ("keep proportion", 0, 10, 0),
                           ("fill / crop", 8, 8, 0), ("pad", 12, 11, 0), ("stretch", 14, 10, 4),
                           ("pad", 0, 0, 0)]:
    CASES.append(("ImageResize+", {"image": PAT, "width": w, "height": h, "interpolation": "bilinear",
                                   "method": method, "condition": "always", "multiple_of": mult}))
for cond, w, h in [("downscale if bigger", 20, 20), ("downscale if bigger", 4, 4),
                   ("upscale if smaller", 4, 4), ("if bigger area", 10, 3), ("if smaller area", 10, 3)]:
    CASES.append(("ImageResize+", {"image": PAT, "width": w, "height": h, "interpolation": "area",
                                   "method": "stretch", "condition": cond, "multiple_of": 0}))
for style, sp, sn in [("sai-cinematic", True, True), ("base", True, True), ("sai-anime", False, True),
                      ("ads-advertising", True, False), ("no such style", True, True)]:
    CASES.append(("SDXLPromptStyler", {"text_positive": "a red fox", "text_negative": "blurry",
                                       "style": style, "log_prompt": False,
                                       "style_positive": sp, "style_negative": sn}))
CASES.append(("SDXLPromptStyler", {"text_positive": "a red fox", "text_negative": "",
                                   "style": "sai-3d-model", "log_prompt": False,
                                   "style_positive": True, "style_negative": True}))
for value, inputs in [("a*2+b", {"a": 3, "b": 0.5}), ("a[2] / 2", {"a": IMG}), ("a > b > 0", {"a": 5, "b": 3}),
                      ("a > b > 4", {"a": 5, "b": 3}), ("max(a, b, 7) - min(a, b)", {"a": 3, "b": 9}),
                      ("round(a / 3, 2)", {"a": 10}), ("a and b", {"a": 0, "b": 9}), ("a or b", {"a": 0, "b": 9}),
                      ("len(a) + sum(a)", {"a": IMG}), ("a", {"a": "2.5"}), ("0/0", {}), ("x", {}),
                      ("a ** 0.5", {"a": 2}), ("-a // 4", {"a": 7}), ("not a", {"a": 0}), ("min(a)", {"a": 4}),
                      ("a * 1.5", {}), ("a.shape", {"a": 2}), ("a % -3", {"a": 7.5}), ("round(2.5) + round(3.5)", {})]:
    CASES.append(("SimpleMath+", dict(value=value, **inputs)))
PAT2 = {"image": [2, 3, 4, 3], "pattern": True}
SMALL = {"image": [1, 4, 5, 3], "pattern": True}
CASES += [
    ("CR Text Input Switch", {"Input": 2, "text1": "a", "text2": "b"}),
    ("CR Text Input Switch", {"Input": 1, "text2": "b"}),
    ("CR Text Input Switch (4 way)", {"Input": 3, "text1": "a", "text2": "b", "text3": "c", "text4": "d"}),
    ("CR Text Input Switch (4 way)", {"Input": 4, "text4": "d"}),
    ("CR Image Input Switch", {"Input": 2, "image1": IMG, "image2": PAT}),
    ("CM_IntToNumber", {"a": 5}),
    ("CM_FloatToNumber", {"a": 2.5}),
    ("CM_NumberToInt", {"a": -3.7}),
    ("CM_NumberToInt", {"a": 4}),
    ("CM_NumberToFloat", {"a": 3}),
    ("Logic Boolean", {"boolean": 0.5}),
    ("Logic Boolean", {"boolean": 0.51}),
    ("Logic Boolean", {"boolean": 1.0}),
    ("Logic Boolean", {"boolean": 0.0}),
    ("ImpactInt", {"value": 7}),
    ("Number to Text", {"number": 3}),
    ("Number to Text", {"number": 2.5}),
    ("Number to Text", {"number": 1e20}),
    ("Text to Number", {"text": "42"}),
    ("Text to Number", {"text": "3.25"}),
    ("Text to Number", {"text": " 7 "}),
    ("Text to Number", {"text": "1_000"}),
    ("Text to Number", {"text": "abc"}),
    ("Number to Int", {"number": -2.5}),
    ("Number to Float", {"number": 3}),
    ("Cfg Literal", {"float": 7.5}),
    ("Seed Generator", {"seed": 12345}),
    ("Image Size to Number", {"image": {"image": [1, 5, 7, 3]}}),
    ("Image Size to Number", {"image": {"image": [2, 5, 7, 3]}}),
    ("Text Prompt (JPS)", {"text": "hello"}),
    ("Text Find and Replace", {"text": "a cat and a cat", "find": "cat", "replace": "dog"}),
    ("Text Find and Replace", {"text": "a cat and a dog", "find": "(a) (\\w+)", "replace": "\\2-\\1"}),
    ("Text Find and Replace", {"text": "abc", "find": "", "replace": "-"}),
    ("Seed Everywhere", {"seed": 99}),
    ("ReroutePrimitive|pysssss", {"value": 5}),
    ("ImpactImageBatchToImageList", {"image": PAT2}),
    ("ImageListToImageBatch", {"images": [PAT, SMALL]}),
    ("ImageListToImageBatch", {"images": [PAT, PAT]}),
]
for pos in ["top-left", "top-center", "top-right", "right-center", "bottom-right", "bottom-center",
            "bottom-left", "left-center", "center"]:
    CASES.append(("ImageCrop+", {"image": PAT, "width": 4, "height": 3, "position": pos,
                                 "x_offset": 0, "y_offset": 0}))
CASES += [
    ("ImageCrop+", {"image": PAT, "width": 5, "height": 4, "position": "center", "x_offset": -4, "y_offset": 3}),
    ("ImageCrop+", {"image": PAT, "width": 64, "height": 64, "position": "top-left", "x_offset": 2, "y_offset": 0}),
    ("SDXLEmptyLatentSizePicker+", {"resolution": "832x1216 (0.68)", "batch_size": 2, "width_override": 0, "height_override": 0}),
    ("SDXLEmptyLatentSizePicker+", {"resolution": "1024x1024 (1.0)", "batch_size": 1, "width_override": 520, "height_override": 0}),
    ("CM_FloatToInt", {"a": -7.9}),
    ("CM_IntToFloat", {"a": 7}),
    ("CM_SDXLResolution", {"resolution": "1216x832"}),
    ("CM_NearestSDXLResolution", {"image": {"image": [1, 600, 1000, 3]}}),
    ("CM_NearestSDXLResolution", {"image": {"image": [1, 8, 8, 3]}}),
    ("Number Operation", {"number_a": 7, "number_b": 2, "operation": "division"}),
    ("Number Operation", {"number_a": -7, "number_b": 2, "operation": "floor division"}),
    ("Number Operation", {"number_a": 7.5, "number_b": -2, "operation": "modulus"}),
    ("Number Operation", {"number_a": 2, "number_b": 10, "operation": "exponentiation"}),
    ("Number Operation", {"number_a": 2, "number_b": -1, "operation": "exponentiation"}),
    ("Number Operation", {"number_a": 3, "number_b": 3.0, "operation": "equals"}),
    ("Number Operation", {"number_a": 3, "number_b": 2.5, "operation": "less-than or equals"}),
    ("Number Operation", {"number_a": 1.5, "number_b": 2, "operation": "multiplication"}),
    ("Number Operation", {"number_a": 1, "number_b": 0, "operation": "division"}),
    ("String to Text", {"string": "as is"}),
    ("Constant Number", {"number_type": "integer", "number": 3.7}),
    ("Constant Number", {"number_type": "float", "number": -2.25}),
    ("Constant Number", {"number_type": "bool", "number": 0.6}),
    ("Constant Number", {"number_type": "integer", "number": 0.0, "number_as_text": "42"}),
    ("Constant Number", {"number_type": "float", "number": 0.0, "number_as_text": "1e3"}),
    ("Constant Number", {"number_type": "bool", "number": 0.0, "number_as_text": "x"}),
    ("CR Latent Input Switch", {"Input": 1, "latent2": "unused"}),
    ("CR Image Input Switch (4 way)", {"Input": 4, "image4": PAT, "image1": IMG}),
    ("SomethingToString", {"input": 3.5, "prefix": "<", "suffix": ">"}),
    ("SomethingToString", {"input": [1, "a", 2.0, True]}),
    ("SomethingToString", {"input": False}),
    ("ImpactMakeImageBatch", {"image1": PAT, "image2": SMALL, "image3": PAT}),
    ("ImpactImageInfo", {"value": IMG}),
    ("Integer Switch (JPS)", {"select": 3, "int_1": 10, "int_3": 30}),
    ("Integer Switch (JPS)", {"select": 9, "int_1": 10}),
    ("Integer Switch (JPS)", {"select": 2, "int_1": 10}),
]
for kw in [dict(width=12, height=5, upscale_method="bilinear", keep_proportion=False, divisible_by=2),
           dict(width=13, height=0, upscale_method="bicubic", keep_proportion=True, divisible_by=0),
           dict(width=0, height=4, upscale_method="area", keep_proportion=True, divisible_by=2),
           dict(width=8, height=8, upscale_method="lanczos", keep_proportion=True, divisible_by=2),
           dict(width=8, height=8, upscale_method="nearest-exact", keep_proportion=False, divisible_by=2, crop=0),
           dict(width=10, height=4, upscale_method="bilinear", keep_proportion=False, divisible_by=2, crop="center"),
           dict(width=10, height=4, upscale_method="area", keep_proportion=False, divisible_by=2, crop="disabled"),
           dict(width=1, height=1, upscale_method="bilinear", keep_proportion=False, divisible_by=1, get_image_size=SMALL)]:
    CASES.append(("ImageResizeKJ", dict(image=PAT, **kw)))
CASES.append(("MaskPreview+", {"mask": {"mask": [2, 5, 6], "pattern": True}}))


def make_input(v):
    import torch
    if isinstance(v, list):
        return [make_input(x) for x in v]
    if isinstance(v, dict) and ("image" in v or "mask" in v):
        shape = v.get("image") or v.get("mask")
        if not v.get("pattern"):
            return torch.zeros(shape)
        n = 1
        for d in shape:
            n *= d
        return torch.tensor([((i * 37) % 101) / 100 for i in range(n)], dtype=torch.float32).reshape(shape)
    return v


def to_json(v):
    import torch
    if isinstance(v, torch.Tensor):
        import hashlib
        import struct
        data = v.detach().to(torch.float32).contiguous().flatten().tolist()
        raw = b"".join(struct.pack(">f", x) for x in data)
        if len(data) <= 4096:
            return {"shape": list(v.shape), "hex": raw.hex()}
        return {"shape": list(v.shape), "sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(v, (list, tuple)):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return v


def saved_image(entry):
    import hashlib
    import folder_paths
    from PIL import Image
    base = folder_paths.get_directory_by_type(entry["type"])
    img = Image.open(os.path.join(base, entry["subfolder"], entry["filename"]))
    rgb = img.convert("RGB")
    return dict(entry, size=list(rgb.size), mode=img.mode,
                rgb_sha256=hashlib.sha256(rgb.tobytes()).hexdigest())


def run_case(nodes, cls_name, inputs):
    cls = nodes.NODE_CLASS_MAPPINGS[cls_name]
    kwargs = {k: make_input(v) for k, v in inputs.items()}
    if getattr(cls, "INPUT_IS_LIST", False):
        kwargs = {k: (v if isinstance(v, list) else [v]) for k, v in kwargs.items()}
    if cls_name == "MathExpression|pysssss":
        kwargs.setdefault("prompt", {})
    if hasattr(cls, "execute") and not hasattr(cls, "FUNCTION"):  # a V3 node
        out = cls.execute(**kwargs)
        return {"result": to_json(list(out.args))}
    fn = getattr(cls(), cls.FUNCTION)
    try:
        out = fn(**kwargs)
    except Exception as e:  # the node's own error, compared by type
        return {"error": type(e).__name__}
    if isinstance(out, dict):
        ui = to_json(out.get("ui"))
        if ui and "images" in ui:
            ui["images"] = [saved_image(x) for x in ui["images"]]
        return {"result": to_json(list(out.get("result", ()))), "ui": ui}
    return {"result": to_json(list(out))}


def main():
    comfyui, base, out_path = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
    import comfyui_packs
    nodes, object_info = comfyui_packs.load(comfyui, base)
    classes = sorted({c for c, _ in CASES} | {"Anything Everywhere"})
    ref = {
        "comfyui": "0.3.64 (a125cd84)",
        "object_info": {c: object_info(c) for c in classes},
        "cases": [
            {"class": c, "inputs": i, "output": run_case(nodes, c, i)} for c, i in CASES
        ],
    }
    with open(out_path, "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
