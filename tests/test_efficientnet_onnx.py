"""EfficientNet-Lite0 without torch: the restricted checkpoint reader and the ONNX graph builder.

The tests of the reader and of the graph's structure always run. The tests that compare with
the torch model run where torch is installed (`pip install -e '.[torch-check]'`, part of
`[test]`, so CI runs them) and skip elsewhere.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from mlbench.services.local import checkpoint, features, onnx_graph
from mlbench.services.local.checkpoint import UnsafeCheckpoint, load_state_dict
from mlbench.services.local.features import EfficientNetLite0, export_onnx, weights_file

#: Real photos that ship inside scikit-image (a core dependency): no download, varied content.
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg",
          "hubble_deep_field.jpg", "retina.jpg", "motorcycle_left.png")


def _photos() -> list[bytes]:
    folder = Path(skimage.data.__file__).parent
    return [(folder / name).read_bytes() for name in PHOTOS]


# -- a tiny writer of torch's legacy checkpoint format, to feed the reader crafted files ------
class _Global:
    """Pickles as a reference to `module.name`, whether or not that exists here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable
        raise AssertionError("never called")


class _Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (_Global("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, self.offset, self.size, self.stride, False,
                 collections.OrderedDict()))


class _Pickler(pickle._Pickler):  # the pure-Python pickler lets `save` be overridden
    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", "FloatStorage"), obj.key, "cpu",
                    obj.data.size, None)
        return None


def _dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _legacy_checkpoint(path: Path, state_dict, storages: list[_Storage],
                       **replace: bytes) -> Path:
    """What `torch.save(..., _use_new_zipfile_serialization=False)` writes; `replace` swaps
    one of its five pickles (magic, protocol, info, state, keys) for given bytes."""
    pickles = {"magic": _dumps(checkpoint.LEGACY_MAGIC),
               "protocol": _dumps(checkpoint.LEGACY_PROTOCOL),
               "info": _dumps({"protocol_version": 1001, "little_endian": True,
                               "type_sizes": {"short": 2, "int": 4, "long": 4}}),
               "state": _dumps(state_dict), "keys": _dumps([s.key for s in storages])}
    parts = list({**pickles, **replace}.values())
    for s in storages:
        parts += [np.int64(s.data.size).astype("<i8").tobytes(), s.data.astype("<f4").tobytes()]
    path.write_bytes(b"".join(parts))
    return path


class _RunsShell:
    """What a malicious checkpoint holds: unpickling it would run a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# -- the restricted reader ------------------------------------------------------------------
@pytest.mark.parametrize("slot", ["state", "magic", "info"])
def test_restricted_unpickler_refuses_a_checkpoint_that_calls_os_system(tmp_path, slot):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2)
    assert b"system" in evil  # the payload really names os.system (posix.system)
    storage = _Storage("0", np.arange(4, dtype=np.float32))
    path = _legacy_checkpoint(tmp_path / "evil.pth",
                              collections.OrderedDict(w=_Tensor(storage, 0, (4,), (1,))),
                              [storage], **{slot: evil})
    with pytest.raises(UnsafeCheckpoint, match=r"evil\.pth: refused to load: .*system"):
        load_state_dict(path)
    assert not marker.exists()  # nothing was run
    pickle.loads(evil)  # while an ordinary unpickler runs it: the test's payload is live
    assert marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"),
                                         ("torch", "load"), ("torch._utils", "_rebuild_parameter"),
                                         ("numpy", "frombuffer")])
def test_restricted_unpickler_refuses_every_global_outside_the_state_dict_set(tmp_path, module,
                                                                              name):
    storage = _Storage("0", np.zeros(1, np.float32))
    path = _legacy_checkpoint(tmp_path / "x.pth", collections.OrderedDict(
        w=_Tensor(storage, 0, (1,), (1,)), extra=_Global(module, name)), [storage])
    with pytest.raises(UnsafeCheckpoint, match=f"names {module}.{name}"):
        load_state_dict(path)


def test_reads_strided_views_of_shared_storages(tmp_path):
    data = np.arange(12, dtype=np.float32)
    s = _Storage("7", data)
    state = collections.OrderedDict(
        whole=_Tensor(s, 0, (3, 4), (4, 1)),
        transposed=_Tensor(s, 0, (4, 3), (1, 4)),
        tail=_Tensor(s, 10, (2,), (1,)),
        scalar=_Tensor(s, 5, (), ()))
    out = load_state_dict(_legacy_checkpoint(tmp_path / "ok.pth", state, [s]))
    assert list(out) == ["whole", "transposed", "tail", "scalar"]
    np.testing.assert_array_equal(out["whole"], data.reshape(3, 4))
    np.testing.assert_array_equal(out["transposed"], data.reshape(3, 4).T)
    np.testing.assert_array_equal(out["tail"], [10, 11])
    assert out["scalar"].shape == () and out["scalar"] == 5
    assert all(a.flags.owndata and a.flags.writeable for a in out.values())


@pytest.mark.parametrize("size,stride,message", [
    ((2, 3), (3, 1), "reads past its storage"),
    ((10**9,), (0,), "repeats the elements of its storage"),  # would materialise 4 GB
])
def test_refuses_a_tensor_view_outside_its_storage(tmp_path, size, stride, message):
    s = _Storage("0", np.zeros(4, np.float32))
    path = _legacy_checkpoint(tmp_path / "view.pth",
                              collections.OrderedDict(w=_Tensor(s, 0, size, stride)), [s])
    with pytest.raises(UnsafeCheckpoint, match=message):
        load_state_dict(path)


@pytest.mark.parametrize("state", [{"shape": (10**6,)},
                                   (None, {"shape": (10**6,), "strides": (1,)})])
def test_refuses_a_build_that_widens_a_checked_tensor_view(tmp_path, state):
    """A pickle can set attributes on what it built (BUILD): a view checked when built must not
    grow afterwards into memory outside its storage."""

    class Widened(_Tensor):
        def __reduce__(self):
            return (*super().__reduce__(), state)

    s = _Storage("0", np.zeros(4, np.float32))
    path = _legacy_checkpoint(tmp_path / "build.pth",
                              collections.OrderedDict(w=Widened(s, 0, (4,), (1,))), [s])
    with pytest.raises(UnsafeCheckpoint, match="build.pth: not a readable PyTorch checkpoint"):
        load_state_dict(path)


def test_refuses_truncated_and_zip_checkpoints(tmp_path):
    s = _Storage("0", np.zeros(4, np.float32))
    path = _legacy_checkpoint(tmp_path / "cut.pth",
                              collections.OrderedDict(w=_Tensor(s, 0, (4,), (1,))), [s])
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(UnsafeCheckpoint, match="cut.pth: truncated inside storage 0"):
        load_state_dict(path)
    with zipfile.ZipFile(tmp_path / "new.pth", "w") as z:
        z.writestr("archive/data.pkl", b"")
    with pytest.raises(UnsafeCheckpoint, match="zip-format"):
        load_state_dict(tmp_path / "new.pth")


def test_reads_the_weights_wheel(tmp_path):
    state = load_state_dict(weights_file())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.running_var"].dtype == np.float32 and (state["_bn0.running_var"] >= 0).all()
    assert state["_bn0.num_batches_tracked"].dtype == np.int64


# -- the graph -------------------------------------------------------------------------------
def test_graph_is_lite0_with_relu6_and_no_swish():
    model = onnx_graph.build_lite0(load_state_dict(weights_file()))
    ops = Counter(n.op_type for n in model.graph.node)
    # stem + 15 expansions (block 0 has none) + 16 depthwise + 16 projections + head
    assert ops["Conv"] == 49
    assert ops["Clip"] == 33  # ReLU6 after every conv but the projections
    assert ops["Add"] == 9  # residuals: every block but the first of each stage
    assert not ops.keys() & {"Sigmoid", "Mul", "HardSwish", "BatchNormalization"}
    depthwise = [n for n in model.graph.node
                 if n.op_type == "Conv" and n.name.endswith("_depthwise_conv")]
    groups = [next(a.i for a in n.attribute if a.name == "group") for n in depthwise]
    assert len(groups) == 16 and groups[0] == 32 and groups[-1] == 1152
    assert [b.stride for b in onnx_graph.lite0_blocks()].count(2) == 4


def test_same_padding_is_tensorflows():
    assert onnx_graph.same_padding(224, 3, 2) == (0, 1)
    assert onnx_graph.same_padding(56, 5, 2) == (1, 2)
    assert onnx_graph.same_padding(14, 5, 1) == (2, 2)
    assert onnx_graph.same_padding(7, 1, 1) == (0, 0)


def test_builder_refuses_weights_of_another_network():
    state = load_state_dict(weights_file())
    state["_blocks.3._depthwise_conv.weight"] = np.zeros((144, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="_blocks.3._depthwise_conv.weight has shape"):
        onnx_graph.build_lite0(state)
    state = load_state_dict(weights_file())
    state["_blocks.16._expand_conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="does not use"):
        onnx_graph.build_lite0(state)


def test_export_is_cached_and_a_changed_builder_exports_again(tmp_path, monkeypatch):
    first = export_onnx(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert export_onnx(tmp_path) == first and first.stat().st_mtime_ns == stamp
    edited = tmp_path / "onnx_graph.py"
    edited.write_text(Path(onnx_graph.__file__).read_text() + "\n# changed\n")
    checkpoint_py, graph_py = features.GRAPH_BUILDERS
    assert graph_py.samefile(onnx_graph.__file__)
    monkeypatch.setattr(features, "GRAPH_BUILDERS", (checkpoint_py, edited))
    second = export_onnx(tmp_path)
    assert second != first and second.exists()
    assert second.read_bytes() == first.read_bytes()  # same graph: same embeddings key


def test_features_of_real_photos_at_any_input_size(tmp_path):
    for size in (224, 97):
        extractor = EfficientNetLite0(size)
        extractor.__dict__["model_path"] = export_onnx(tmp_path)
        feats = extractor.embed(_photos()[:3])
        assert feats.shape == (3, 1280) and feats.dtype == np.float32
        assert (feats >= 0).all() and (feats <= 6).all()  # pooled ReLU6
        assert extractor.key.endswith(f"-{size}")


# -- against the torch model (the `torch-check` extra) ---------------------------------------
def _torch_model():
    torch = pytest.importorskip("torch")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    net = lite.EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(weights_file(), map_location="cpu", weights_only=True))
    return torch, net.eval()


def test_checkpoint_reader_matches_torch_load():
    torch, _ = _torch_model()
    ours = load_state_dict(weights_file())
    theirs = torch.load(weights_file(), map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        ref = tensor.numpy()
        assert ours[name].dtype == ref.dtype and ours[name].shape == ref.shape, name
        np.testing.assert_array_equal(ours[name], ref, err_msg=name)


@pytest.mark.parametrize("size", [224, 256, 97])
def test_onnx_features_match_the_torch_model(tmp_path, size):
    """At the default size 224 (and 256) the max abs difference to torch is below 1e-5. At 97
    (the padding is the one computed for 224, not 'same' for 97, as in torch) float32 rounding
    alone differs by up to ~2e-5 between any two kernels (torch's own old ONNX export too), so
    there the graph must be no further from a float64 run of the torch model than torch's own
    float32 run is (a layer wrong by one pixel of padding would be off by far more)."""
    torch, net = _torch_model()
    extractor = EfficientNetLite0(size)
    extractor.__dict__["model_path"] = export_onnx(tmp_path)
    photos = _photos()
    ours = extractor.embed(photos)
    batch = torch.from_numpy(np.stack([extractor.preprocess(p) for p in photos]))
    with torch.inference_mode():
        theirs = net.extract_features(batch).mean(dim=(2, 3)).numpy()
    diff = float(np.abs(ours - theirs).max())
    if size != 97:
        assert diff < 1e-5
        return
    with torch.inference_mode():
        exact = net.double().extract_features(batch.double()).mean(dim=(2, 3)).numpy()
    assert float(np.abs(ours - exact).max()) <= 2 * float(np.abs(theirs - exact).max()), diff
