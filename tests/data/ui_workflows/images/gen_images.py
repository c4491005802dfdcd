"""Writes 8x8 images carrying a workflow exactly as ComfyUI 0.3.64 embeds one (run with the
reference venv's Pillow): SaveImage's PNG text chunks (PngInfo.add_text "prompt", then each
extra_pnginfo key), and SaveAnimatedWEBP's EXIF (0x0110 "prompt:<json>", 0x010F - i
"<key>:<json>"); the JPEG carries the same EXIF as the WebP."""
import json, os
from PIL import Image
from PIL.PngImagePlugin import PngInfo

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "..", "rules")
workflow = json.load(open(os.path.join(RULES, "widgets_in_order.json")))
prompt = json.load(open(os.path.join(RULES, "widgets_in_order.api.json")))
img = Image.new("RGB", (8, 8), (200, 40, 40))

meta = PngInfo()
meta.add_text("prompt", json.dumps(prompt))
meta.add_text("workflow", json.dumps(workflow))
img.save(os.path.join(HERE, "prompt_and_workflow.png"), pnginfo=meta, compress_level=4)

meta = PngInfo()
meta.add_text("workflow", json.dumps(workflow))
img.save(os.path.join(HERE, "workflow_only.png"), pnginfo=meta, compress_level=4)

img.save(os.path.join(HERE, "no_metadata.png"))

exif = img.getexif()
exif[0x010F] = "workflow:{}".format(json.dumps(workflow))
img.save(os.path.join(HERE, "workflow_only.webp"), exif=exif, lossless=True, quality=80, method=4)
exif[0x0110] = "prompt:{}".format(json.dumps(prompt))
img.save(os.path.join(HERE, "prompt_and_workflow.webp"), exif=exif, lossless=True, quality=80, method=4)
img.save(os.path.join(HERE, "prompt_and_workflow.jpg"), exif=exif, quality=90)
print("written")
