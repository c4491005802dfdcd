#!/usr/bin/env node
// An example comfyrs node pack in JavaScript (Node.js, no dependencies), speaking the node
// protocol directly (docs/node-protocol.md) to show that any language can host nodes:
// 4-byte little-endian length + JSON on stdin/stdout, tensors as safetensors files.
//
//   comfyrs serve --node-host "js_image=node examples/packs/js-image/pack.js"
//
// Nodes: JsInvertImage (IMAGE -> IMAGE, 1 - x per channel, progress per image of the batch)
// and JsTextStats (STRING -> INT length in code points, STRING reversed).
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");

let exchangeDir = process.env.COMFYRS_EXCHANGE_DIR || ".";
let interrupted = false;

const NODES = {
  JsInvertImage: {
    input: {
      required: { image: ["IMAGE"], strength: ["FLOAT", { default: 1.0, min: 0.0, max: 1.0, step: 0.01 }] },
    },
    input_order: { required: ["image", "strength"] },
    output: ["IMAGE"],
    output_is_list: [false],
    output_name: ["IMAGE"],
    name: "JsInvertImage",
    display_name: "Invert Image (JS)",
    description: "Blends each pixel towards 1 - x by strength.",
    category: "examples/js",
    output_node: false,
  },
  JsTextStats: {
    input: { required: { text: ["STRING", { multiline: true, default: "" }] } },
    input_order: { required: ["text"] },
    output: ["INT", "STRING"],
    output_is_list: [false, false],
    output_name: ["length", "reversed"],
    name: "JsTextStats",
    display_name: "Text Stats (JS)",
    description: "",
    category: "examples/js",
    output_node: false,
  },
};

// --- safetensors -----------------------------------------------------------------------------
function readTensors(file) {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8"));
  delete header.__metadata__;
  const out = {};
  for (const [name, info] of Object.entries(header)) {
    if (info.dtype !== "F32") throw new Error(`tensor ${name} has dtype ${info.dtype}; expected F32`);
    const [a, b] = info.data_offsets;
    const bytes = Buffer.from(buf.subarray(8 + n + a, 8 + n + b)); // copy: aligned
    out[name] = { shape: info.shape, data: new Float32Array(bytes.buffer, bytes.byteOffset, (b - a) / 4) };
  }
  return out;
}

function writeTensors(file, tensors) {
  const header = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let head = JSON.stringify(header);
  head += " ".repeat((8 - (Buffer.byteLength(head) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(head)));
  const parts = [len, Buffer.from(head)];
  for (const t of Object.values(tensors)) parts.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  fs.writeFileSync(file + ".part", Buffer.concat(parts));
  fs.renameSync(file + ".part", file);
}

// --- framing ---------------------------------------------------------------------------------
function send(msg) {
  const body = Buffer.from(JSON.stringify(msg));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(body.length);
  fs.writeSync(1, Buffer.concat([len, body]));
}

// --- nodes -----------------------------------------------------------------------------------
function execute(msg) {
  const inputs = msg.inputs;
  if (msg.class === "JsInvertImage") {
    const img = readTensors(inputs.image.path).image;
    const s = inputs.strength;
    const [batch] = img.shape;
    const per = img.data.length / batch;
    const out = new Float32Array(img.data.length);
    for (let b = 0; b < batch; b++) {
      for (let i = b * per; i < (b + 1) * per; i++) out[i] = img.data[i] + s * (1 - 2 * img.data[i]);
      send({ type: "progress", id: msg.id, value: b + 1, max: batch });
    }
    const file = path.join(exchangeDir, `out-${crypto.randomUUID()}.safetensors`);
    writeTensors(file, { image: { shape: img.shape, data: out } });
    return [{ $ref: "image", path: file }];
  }
  if (msg.class === "JsTextStats") {
    const chars = Array.from(inputs.text);
    return [chars.length, chars.reverse().join("")];
  }
  throw new Error(`unknown class ${msg.class}`);
}

function handle(msg) {
  switch (msg.type) {
    case "hello":
      exchangeDir = msg.exchange_dir || exchangeDir;
      return { type: "hello", id: msg.id, protocol: 1, host: { name: "js_image", version: "1.0", language: "javascript" } };
    case "list_nodes":
      return { type: "nodes", id: msg.id, nodes: NODES };
    case "execute":
      interrupted = false;
      try {
        return { type: "result", id: msg.id, outputs: execute(msg) };
      } catch (e) {
        return { type: "error", id: msg.id, message: String(e.message || e), exception_type: e.name || "Error" };
      }
    case "interrupt":
      interrupted = true; // these nodes are short; nothing to stop
      return null;
    case "release":
      return null;
    case "shutdown":
      process.exit(0);
    default:
      return { type: "error", id: msg.id, message: `unknown request ${msg.type}`, exception_type: "ProtocolError" };
  }
}

let pending = Buffer.alloc(0);
process.stdin.on("data", (chunk) => {
  pending = Buffer.concat([pending, chunk]);
  while (pending.length >= 4) {
    const n = pending.readUInt32LE(0);
    if (pending.length < 4 + n) break;
    const msg = JSON.parse(pending.subarray(4, 4 + n).toString("utf8"));
    pending = pending.subarray(4 + n);
    const reply = handle(msg);
    if (reply) send(reply);
  }
});
process.stdin.on("end", () => process.exit(0));
