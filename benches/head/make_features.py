#!/usr/bin/env python3
"""Bottleneck features for the train-head benchmark, until the Rust `bottleneck` stage exists.

Cuts the VGG16 conv base out of the Keras ImageNet ONNX export (input `input` NHWC, output the
block5 max-pool, NCHW in the export, transposed back to Keras' NHWC), resizes every image to
150x150 with PIL bilinear, preprocesses it (caffe: BGR minus the ImageNet means on 0..255;
rescale: RGB/255) and writes, per split, the same files as `bottleneck`:
features.npy (float32 [N,4,4,512]), labels.npy (int64 [N]), files.txt, classes.json.

    nice /tmp/headenv/bin/python benches/head/make_features.py \
        --data /work/shared/data/dogs-vs-cats --model .cache/models/vgg16-keras-imagenet.onnx \
        --out /work/features

Needs numpy, onnx, onnxruntime and pillow.
"""
import argparse
import json
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

POOL5 = "functional_1/block5_pool_1/MaxPool2d:0"
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def conv_base(path):
    """The sub-graph that computes POOL5, with dynamic N/H/W input and NHWC output `features`."""
    m = onnx.load(path)
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    needed, stack = set(), [POOL5]
    while stack:
        t = stack.pop()
        if t in needed or t not in producer:
            continue
        needed.add(t)
        stack.extend(producer[t].input)
    keep = [n for n in g.node if any(o in needed for o in n.output)]
    used = {i for n in keep for i in n.input}
    del g.node[:]
    g.node.extend(keep)
    g.node.append(onnx.helper.make_node("Transpose", [POOL5], ["features"], perm=[0, 2, 3, 1]))
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    del g.output[:]
    g.output.append(onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, ["N", "h", "w", 512]))
    dims = g.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[1].dim_param, dims[2].dim_param = "N", "H", "W"
    return m.SerializeToString()


def scan(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    files, labels = [], []
    for label, c in enumerate(classes):
        names = []
        for dirpath, _, fnames in os.walk(os.path.join(root, c)):
            names += [os.path.join(dirpath, f) for f in fnames if f.lower().endswith(EXTS) and not f.startswith(".")]
        for p in sorted(names):
            files.append(os.path.relpath(p, root))
            labels.append(label)
    return classes, files, np.array(labels, dtype=np.int64)


def load(path, size, mode):
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    if mode == "caffe":
        return x[..., ::-1] - CAFFE_MEAN_BGR
    return x / 255.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with train/ and validation/ class folders")
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--modes", default="caffe,rescale")
    ap.add_argument("--splits", default="train,validation")
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()

    sess = ort.InferenceSession(conv_base(a.model), providers=["CPUExecutionProvider"])
    for mode in a.modes.split(","):
        for split in a.splits.split(","):
            root = os.path.join(a.data, split)
            classes, files, labels = scan(root)
            out = os.path.join(a.out, mode, split)
            os.makedirs(out, exist_ok=True)
            feats = np.empty((len(files), a.size // 32, a.size // 32, 512), dtype=np.float32)
            t0 = time.time()
            for i in range(0, len(files), a.batch_size):
                batch = np.stack([load(os.path.join(root, f), a.size, mode) for f in files[i : i + a.batch_size]])
                feats[i : i + len(batch)] = sess.run(["features"], {"input": batch})[0]
            np.save(os.path.join(out, "features.npy"), feats)
            np.save(os.path.join(out, "labels.npy"), labels)
            with open(os.path.join(out, "files.txt"), "w") as f:
                f.writelines(p + "\n" for p in files)
            with open(os.path.join(out, "classes.json"), "w") as f:
                json.dump({c: i for i, c in enumerate(classes)}, f)
            print(f"{mode}/{split}: {feats.shape} in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
