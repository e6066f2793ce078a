"""`fruitlake export ... --web DIR`: a static page that classifies a photo in the browser with the exported model
and onnxruntime-web, taken from its npm package (pinned version, checked against the registry's sha512).

DIR holds index.html, model.onnx and onnxruntime-web's wasm build; serve it over HTTP(S) (browsers do not let a
page fetch its model and wasm from file://), e.g. `python -m http.server -d DIR`. The page decodes the photo with
the browser (EXIF orientation applied, transparency onto white) and resizes it to the model's input in JavaScript
with the arithmetic of Pillow's BILINEAR resize (fixed-point coefficients, horizontal pass then vertical, 8-bit
in between), so that it feeds the model what `fruitlake classify` feeds it. One difference stays: for a JPEG at
least twice the input size, Pillow decodes at a reduced DCT scale first, the browser at full size.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from fruitlake import FruitlakeError
from fruitlake.cache import cache_dir
from fruitlake.classify import load

ORT_WEB = "onnxruntime-web"
ORT_WEB_VERSION = "1.31.1"
ORT_WEB_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
# The wasm-only build (no WebGL/WebGPU): its loader and its SIMD wasm, which it fetches from beside itself.
# (The package has no LICENSE file; its MIT notice heads ort.wasm.min.js.)
ORT_WEB_FILES = ("dist/ort.wasm.min.js", "dist/ort-wasm-simd-threaded.mjs", "dist/ort-wasm-simd-threaded.wasm")
TARBALL_ENV = "FRUITLAKE_ORT_WEB_TGZ"  # a local copy of the npm tarball (offline machines); still checked
MODEL_FILE, PAGE = "model.onnx", "index.html"


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode("ascii")


def ort_web_tarball() -> Path:
    """The npm tarball of onnxruntime-web ORT_WEB_VERSION: FRUITLAKE_ORT_WEB_TGZ, the cache, or `npm pack`."""
    given = os.environ.get(TARBALL_ENV)
    cached = cache_dir() / "npm" / f"{ORT_WEB}-{ORT_WEB_VERSION}.tgz"
    path = Path(given) if given else cached
    if not path.is_file():
        if shutil.which("npm") is None:
            raise FruitlakeError(f"--web needs {ORT_WEB} {ORT_WEB_VERSION} from npm: install npm, or set "
                                 f"{TARBALL_ENV} to its tarball (`npm pack {ORT_WEB}@{ORT_WEB_VERSION}`)")
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent) as scratch:
            done = subprocess.run(["npm", "pack", f"{ORT_WEB}@{ORT_WEB_VERSION}", "--silent",
                                   "--pack-destination", scratch], capture_output=True, text=True, timeout=600)
            packed = Path(scratch) / f"{ORT_WEB}-{ORT_WEB_VERSION}.tgz"
            if done.returncode != 0 or not packed.is_file():
                raise FruitlakeError(f"`npm pack {ORT_WEB}@{ORT_WEB_VERSION}` failed: "
                                     f"{(done.stderr or done.stdout).strip()[-300:]}")
            os.replace(packed, cached)
    if _integrity(path) != ORT_WEB_INTEGRITY:
        raise FruitlakeError(f"{str(path)!r} is not {ORT_WEB} {ORT_WEB_VERSION} as npm publishes it (sha512 "
                             "differs); delete it to download it again")
    return path


def write_page(model: str, folder: str) -> str:
    """DIR/index.html, DIR/model.onnx and onnxruntime-web's files; returns DIR's index.html."""
    classifier = load(model)  # refuses a file that is not an exported model
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ort_web_tarball(), "r:gz") as archive:
        for name in ORT_WEB_FILES:
            try:
                member = archive.extractfile(f"package/{name}")
            except KeyError:
                member = None
            if member is None:
                raise FruitlakeError(f"{ORT_WEB} {ORT_WEB_VERSION} has no {name}")
            (target / Path(name).name).write_bytes(member.read())
    shutil.copyfile(model, target / MODEL_FILE)
    (target / PAGE).write_text(page(classifier.labels, classifier.image_size), encoding="utf-8")
    return str(target / PAGE)


def page(labels: list[str], size: int) -> str:
    """The one HTML file: labels embedded, script inline."""
    # </script> inside a label must not end the script: JSON with "<" escaped.
    labels_json = json.dumps(labels, ensure_ascii=False).replace("<", "\\u003c")
    return PAGE_HTML.replace("@LABELS@", labels_json).replace("@SIZE@", str(size)).replace(
        "@TITLE@", html.escape(f"fruitlake: {len(labels)} fruits"))


PAGE_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@TITLE@</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 32em; margin: 0 auto; padding: 1em; color: #1d2330; }
label.pick { display: block; background: #0b5cad; color: #fff; text-align: center; padding: 1em;
             border-radius: .5em; font-size: 1.2em; cursor: pointer; }
input[type=file] { display: none; }
canvas { width: 100%; max-width: 224px; display: block; margin: 1em auto; border-radius: .3em; }
ol { font-size: 1.2em; } .p { color: #5a6270; } #status { color: #5a6270; }
</style></head>
<body>
<h1>Which fruit?</h1>
<label class="pick">Take or choose a photo
<input id="photo" type="file" accept="image/*" capture="environment"></label>
<p id="status">loading the model...</p>
<canvas id="seen" width="@SIZE@" height="@SIZE@"></canvas>
<ol id="top"></ol>
<script src="ort.wasm.min.js"></script>
<script>
"use strict";
const LABELS = @LABELS@;
const SIZE = @SIZE@;
const PRECISION_BITS = 22;  // Pillow's 8-bit resampling: 32 - 8 - 2

// Pillow's precompute_coeffs for the bilinear (triangle) filter, coefficients in fixed point.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize, filterScale = Math.max(scale, 1), support = filterScale;
  const taps = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const weights = []; let total = 0;
    for (let x = 0; x < xmax; x++) {
      const w = Math.max(0, 1 - Math.abs((x + xmin - center + 0.5) / filterScale));
      weights.push(w); total += w;
    }
    const fixed = weights.map(w => {
      const k = total ? w / total : 0;
      return k < 0 ? Math.trunc(-0.5 + k * (1 << PRECISION_BITS)) : Math.trunc(0.5 + k * (1 << PRECISION_BITS));
    });
    taps.push([xmin, fixed]);
  }
  return taps;
}

function clip8(sum) {
  const v = Math.floor(sum / (1 << PRECISION_BITS));
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// RGB bytes (width x height) -> RGB bytes (SIZE x SIZE): horizontal pass, then vertical, 8-bit in between.
function resize(rgb, width, height) {
  let source = rgb, w = width;
  if (width !== SIZE) {
    const taps = coefficients(width, SIZE), out = new Uint8Array(SIZE * height * 3);
    for (let y = 0; y < height; y++) for (let xx = 0; xx < SIZE; xx++) {
      const [xmin, k] = taps[xx];
      for (let c = 0; c < 3; c++) {
        let sum = 1 << (PRECISION_BITS - 1);
        for (let x = 0; x < k.length; x++) sum += source[(y * w + xmin + x) * 3 + c] * k[x];
        out[(y * SIZE + xx) * 3 + c] = clip8(sum);
      }
    }
    source = out; w = SIZE;
  }
  if (height !== SIZE) {
    const taps = coefficients(height, SIZE), out = new Uint8Array(SIZE * SIZE * 3);
    for (let yy = 0; yy < SIZE; yy++) {
      const [ymin, k] = taps[yy];
      for (let x = 0; x < SIZE; x++) for (let c = 0; c < 3; c++) {
        let sum = 1 << (PRECISION_BITS - 1);
        for (let y = 0; y < k.length; y++) sum += source[((ymin + y) * w + x) * 3 + c] * k[y];
        out[(yy * SIZE + x) * 3 + c] = clip8(sum);
      }
    }
    source = out;
  }
  return source;
}

// A photo (File or Blob) -> SIZE x SIZE RGB bytes: upright (EXIF), transparency onto white, Pillow's resize.
async function pixels(blob) {
  const bitmap = await createImageBitmap(blob, {imageOrientation: "from-image", premultiplyAlpha: "none",
                                                colorSpaceConversion: "none"});
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.fillStyle = "#fff"; context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const rgb = new Uint8Array(canvas.width * canvas.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return resize(rgb, canvas.width, canvas.height);
}

function show(rgb) {
  const context = document.getElementById("seen").getContext("2d");
  const image = context.createImageData(SIZE, SIZE);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    image.data[i] = rgb[j]; image.data[i + 1] = rgb[j + 1]; image.data[i + 2] = rgb[j + 2]; image.data[i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
}

ort.env.wasm.numThreads = 1;  // threads need a cross-origin isolated page; one is enough for one photo
const session = ort.InferenceSession.create("model.onnx", {executionProviders: ["wasm"]});
session.then(() => { document.getElementById("status").textContent = "ready: take or choose a photo"; },
             error => { document.getElementById("status").textContent = "could not load the model: " + error; });

async function classify(blob) {
  const status = document.getElementById("status");
  status.textContent = "classifying...";
  const rgb = await pixels(blob);
  show(rgb);
  const image = new ort.Tensor("uint8", rgb, [1, SIZE, SIZE, 3]);
  const result = await (await session).run({image: image});
  const probabilities = result.probabilities.data;
  const top = Array.from(probabilities.keys()).sort((a, b) => probabilities[b] - probabilities[a]).slice(0, 3)
    .map(i => [LABELS[i], probabilities[i]]);
  const list = document.getElementById("top");
  list.replaceChildren(...top.map(([label, p]) => {
    const item = document.createElement("li");
    item.textContent = label + " ";
    const share = document.createElement("span");
    share.className = "p"; share.textContent = (100 * p).toFixed(1) + "%";
    item.append(share);
    return item;
  }));
  status.textContent = "";
  return top;
}

document.getElementById("photo").addEventListener("change", event => {
  const file = event.target.files[0];
  if (file) classify(file).catch(error => { document.getElementById("status").textContent = "failed: " + error; });
});

// ?image=URL (repeatable) classifies the photos at those (same-origin) addresses in turn; &report=URL then POSTs
// each outcome there as JSON: {image, top} or {image, error}. The tests drive the page this way.
const query = new URLSearchParams(location.search);
(async () => {
  for (const address of query.getAll("image")) {
    let outcome;
    try {
      outcome = {image: address, top: await classify(await (await fetch(address)).blob())};
    } catch (error) {
      outcome = {image: address, error: String(error)};
    }
    if (query.get("report")) await fetch(query.get("report"), {method: "POST", body: JSON.stringify(outcome)});
  }
})();
</script>
</body></html>
"""
