"""Writes small UI-format workflows (format 0.4 and 1), one per conversion rule, for
tests/ui_workflow_rules.rs. Their API JSON references come from the real frontend
(e2e/frontend_convert.mjs), like the templates'. Run: python3 gen_rules.py"""
import json, os

HERE = os.path.dirname(os.path.abspath(__file__))

class G:
    def __init__(self):
        self.nodes, self.links, self.next_link = [], [], 1
    def node(self, id, type, inputs=(), outputs=(), widgets=None, mode=0, title=None, props=None):
        n = {"id": id, "type": type, "pos": [id * 10, 0], "size": [200, 100], "flags": {},
             "order": len(self.nodes), "mode": mode,
             "inputs": [dict(name=i[0], type=i[1], link=None, **({"widget": {"name": i[0]}} if len(i) > 2 and i[2] else {})) for i in inputs],
             "outputs": [{"name": o[0], "type": o[1], "links": []} for o in outputs],
             "properties": props or {"Node name for S&R": type}}
        if widgets is not None:
            n["widgets_values"] = widgets
        if title:
            n["title"] = title
        self.nodes.append(n)
        return n
    def link(self, a, aslot, b, bname):
        na = next(n for n in self.nodes if n["id"] == a)
        nb = next(n for n in self.nodes if n["id"] == b)
        bslot = next(i for i, x in enumerate(nb["inputs"]) if x["name"] == bname)
        lid = self.next_link; self.next_link += 1
        ty = na["outputs"][aslot]["type"]
        self.links.append([lid, a, aslot, b, bslot, ty])
        na["outputs"][aslot]["links"].append(lid)
        nb["inputs"][bslot]["link"] = lid
        return lid
    def dump(self, name, groups=()):
        wf = {"last_node_id": max(n["id"] for n in self.nodes), "last_link_id": self.next_link - 1,
              "nodes": self.nodes, "links": self.links, "groups": list(groups), "config": {},
              "extra": {}, "version": 0.4}
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(wf, f, indent=1)

def sd15(g, ks_mode=0, save_mode=0):
    g.node(4, "CheckpointLoaderSimple", outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], widgets=["v1-5-pruned-emaonly.safetensors"])
    g.node(5, "EmptyLatentImage", outputs=[("LATENT", "LATENT")], widgets=[512, 512, 1])
    g.node(6, "CLIPTextEncode", inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")], widgets=["a photo of a cat"])
    g.node(7, "CLIPTextEncode", inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")], widgets=["blurry"], title="Negative")
    g.node(3, "KSampler", inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
           outputs=[("LATENT", "LATENT")], widgets=[42, "randomize", 20, 7.5, "euler", "normal", 1.0], mode=ks_mode)
    g.node(8, "VAEDecode", inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")])
    g.node(9, "SaveImage", inputs=[("images", "IMAGE")], widgets=["ComfyUI"], mode=save_mode)
    g.link(6, 0, 3, "positive"); g.link(7, 0, 3, "negative"); g.link(5, 0, 3, "latent_image")
    g.link(4, 1, 6, "clip"); g.link(4, 1, 7, "clip"); g.link(3, 0, 8, "samples"); g.link(4, 2, 8, "vae")
    g.link(8, 0, 9, "images")

# 1. widget values by declaration order; control_after_generate and upload buttons skipped
g = G(); sd15(g); g.link(4, 0, 3, "model")
g.node(10, "LoadImage", outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")], widgets=["example.png", "image"])
g.node(11, "ImageScale", inputs=[("image", "IMAGE")], outputs=[("IMAGE", "IMAGE")], widgets=["nearest-exact", 512, 512, "disabled"])
g.link(10, 0, 11, "image")
g.node(12, "PreviewImage", inputs=[("images", "IMAGE")])
g.link(11, 0, 12, "images")
g.dump("widgets_in_order")

# 2. converted widgets: a linked widget input sends the link; PrimitiveNodes push values
g = G(); sd15(g); g.link(4, 0, 3, "model")
ks = next(n for n in g.nodes if n["id"] == 3)
ks["inputs"].append({"name": "seed", "type": "INT", "link": None, "widget": {"name": "seed"}})
ks["inputs"].append({"name": "steps", "type": "INT", "link": None, "widget": {"name": "steps"}})
g.node(20, "PrimitiveNode", outputs=[("INT", "INT")], widgets=[1234, "fixed"], title="Seed", props={"Run widget replace on values": False})
g.link(20, 0, 3, "seed")
g.node(21, "PrimitiveInt", outputs=[("INT", "INT")], widgets=[7, "fixed"])
g.link(21, 0, 3, "steps")
pos = next(n for n in g.nodes if n["id"] == 6)
pos["inputs"].append({"name": "text", "type": "STRING", "link": None, "widget": {"name": "text"}})
g.node(22, "PrimitiveNode", outputs=[("STRING", "STRING")], widgets=["a primitive prompt"], props={"Run widget replace on values": False})
g.link(22, 0, 6, "text")
g.dump("converted_widgets_and_primitives")

# 3. Reroute nodes (legacy, virtual) are resolved through, also in chains
g = G(); sd15(g)
g.node(30, "Reroute", inputs=[("", "*")], outputs=[("MODEL", "MODEL")], props={"showOutputText": False, "horizontal": False})
g.node(31, "Reroute", inputs=[("", "*")], outputs=[("MODEL", "MODEL")], props={"showOutputText": False, "horizontal": False})
g.link(4, 0, 30, ""); g.link(30, 0, 31, ""); g.link(31, 0, 3, "model")
g.node(32, "Reroute", inputs=[("", "*")], outputs=[("*", "*")], props={"showOutputText": False, "horizontal": False})
g.dump("reroutes")

# 4. bypassed nodes (mode 4) pass their first input of the matching type through
g = G(); sd15(g)
g.node(40, "LoraLoader", inputs=[("model", "MODEL"), ("clip", "CLIP")], outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP")],
       widgets=["lora.safetensors", 1.0, 1.0], mode=4)
g.link(4, 0, 40, "model"); g.link(4, 1, 40, "clip"); g.link(40, 0, 3, "model")
g.node(41, "CLIPTextEncode", inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")], widgets=["through the bypassed lora"])
g.link(40, 1, 41, "clip")
g.node(42, "LatentUpscaleBy", inputs=[("samples", "LATENT")], outputs=[("LATENT", "LATENT")], widgets=["nearest-exact", 1.5], mode=4)
g.link(3, 0, 42, "samples")
g.node(43, "VAEDecode", inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")], mode=4)
g.link(42, 0, 43, "samples"); g.link(4, 2, 43, "vae")
g.node(44, "PreviewImage", inputs=[("images", "IMAGE")])
g.link(43, 0, 44, "images")
g.dump("bypassed_nodes")

# 5. muted nodes (mode 2) are dropped with the links to them
g = G(); sd15(g, save_mode=2); g.link(4, 0, 3, "model")
g.node(50, "LatentUpscaleBy", inputs=[("samples", "LATENT")], outputs=[("LATENT", "LATENT")], widgets=["nearest-exact", 1.5], mode=2)
g.link(3, 0, 50, "samples")
g.node(51, "VAEDecode", inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")])
g.link(50, 0, 51, "samples"); g.link(4, 2, 51, "vae")
g.node(52, "PreviewImage", inputs=[("images", "IMAGE")])
g.link(51, 0, 52, "images")
g.dump("muted_nodes")

# 6. notes and groups are layout only; titles come from the node or its class
g = G(); sd15(g); g.link(4, 0, 3, "model")
g.node(60, "Note", widgets=["a note"])
g.node(61, "MarkdownNote", widgets=["# a markdown note"])
g.dump("notes_and_groups", groups=[{"id": 1, "title": "Group", "bounding": [0, 0, 500, 500], "color": "#3f789e", "font_size": 24, "flags": {}}])

# 7. dynamic prompts: comments stripped; a one-choice {a} resolves to itself; filename_prefix %Node.widget%
g = G(); sd15(g); g.link(4, 0, 3, "model")
next(n for n in g.nodes if n["id"] == 6)["widgets_values"] = ["a {cat} // line comment\nsitting /* block */ still, \\{literal\\}"]
next(n for n in g.nodes if n["id"] == 9)["widgets_values"] = ["run_%KSampler.seed%_%Negative.text%"]
g.dump("text_processing")

# 8. an old workflow whose widgets_values still hold a value for a forceInput input
g = G(); sd15(g); g.link(4, 0, 3, "model")
g.node(70, "CreateHookKeyframesFromFloats", inputs=[("floats_strength", "FLOATS"), ("prev_hook_kf", "HOOK_KEYFRAMES")],
       outputs=[("HOOK_KF", "HOOK_KEYFRAMES")], widgets=[1.0, 0.1, 0.9, True])
g.dump("widget_values_migration")
print("written")
