"""Writes corpus/torch/*.pth: state dicts laid out as torch.save(sd, f,
_use_new_zipfile_serialization=False) does, by Python's own pickle module (protocol 2), with
stand-in torch modules so that no torch install is needed. Run: python3 make_torch_seeds.py"""
import collections
import io
import pickle
import struct
import sys
import types
from pathlib import Path

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks):
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
for kind in ["FloatStorage", "LongStorage", "HalfStorage", "DoubleStorage", "IntStorage", "ByteStorage"]:
    setattr(torch, kind, type(kind, (), {"__module__": "torch"}))


class Storage:
    def __init__(self, kind, key, values, fmt):
        self.kind, self.key, self.values, self.fmt = kind, key, values, fmt


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class Writer(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", getattr(torch, obj.kind), obj.key, "cpu", len(obj.values), None)
        return None


def save(path, tensors, storages):
    out = bytearray()
    for header in [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                   "type_sizes": {"short": 2, "int": 4, "long": 4}}]:
        out += pickle.dumps(header, protocol=2)
    buf = io.BytesIO()
    Writer(buf, protocol=2).dump(tensors)
    out += buf.getvalue()
    out += pickle.dumps([s.key for s in storages], protocol=2)
    for s in storages:
        out += struct.pack("<Q", len(s.values)) + struct.pack("<%d%s" % (len(s.values), s.fmt), *s.values)
    Path(path).write_bytes(bytes(out))


here = Path(__file__).parent / "torch"
here.mkdir(exist_ok=True)
w = Storage("FloatStorage", "0", [i * 0.25 for i in range(12)], "f")
b = Storage("FloatStorage", "1", [0.5, -0.5, 1.0], "f")
n = Storage("LongStorage", "2", [7], "q")
sd = collections.OrderedDict()
sd["features.0.weight"] = Tensor(w, 0, [3, 1, 2, 2], [4, 4, 2, 1])
sd["features.0.bias"] = Tensor(b, 0, [3], [1])
sd["features.0.weight_t"] = Tensor(w, 1, [2, 3], [1, 4])
sd["bn.num_batches_tracked"] = Tensor(n, 0, [], [])
save(here / "conv.pth", sd, [w, b, n])
h = Storage("HalfStorage", "5", [0, 15360], "H")
save(here / "half.pth", collections.OrderedDict(x=Tensor(h, 0, [2], [1])), [h])
