"""Small, deterministic ONNX stand-ins for insightface's antelopev2 models (tests and demos only).

They have the input/output signatures insightface routes on, so `insightface.model_zoo.get_model`
loads them as the real thing:

- recognition (ArcFace-like): input `input.1` float32 (N, 3, 112, 112), RGB, (x - 127.5) / 127.5;
  one output (N, 512). Weights are seeded random; the embedding means nothing, but it is a fixed
  function of the aligned crop.
- detection (SCRFD-like, 3 strides (8, 16, 32), 2 anchors per cell, with keypoints): input `input.1`
  float32 (1, 3, H, W) with symbolic H, W; nine outputs in SCRFD order: scores for strides 8/16/32
  (K_s, 1), box distances (K_s, 4), keypoint offsets (K_s, 10), K_s = (H/s) * (W/s) * 2, all in stride
  units. Only stride 32 fires: score = sigmoid(gain * (mean of the normalised patch) - offset), so a
  bright, grid-aligned 32 x 32 square on a dark image is "a face". Its box is the cell
  (anchor point = the cell's top-left corner, distances (0, 0, 1, 1)) and its keypoints are the ArcFace
  template scaled into the cell. This makes detection checkable by hand.

`write_antelope_like_pack(root)` writes both into `root/models/antelopev2/` (the antelopev2 layout).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RECOGNITION_FILE = "glintr100.onnx"
DETECTION_FILE = "scrfd_10g_bnkps.onnx"
PACK_NAME = "antelopev2"

# ArcFace 112 px template (insightface.utils.face_align.arcface_dst), used to place stand-in keypoints.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
DETECTOR_STRIDES = (8, 16, 32)
DETECTOR_FIRING_STRIDE = 32
_OPSET = 17
_IR_VERSION = 9


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


def recognition_model(seed: int = 0, embedding_dim: int = 512) -> onnx.ModelProto:
    """ArcFace-like model: (N, 3, 112, 112) -> (N, embedding_dim); patchify conv, ReLU, linear."""
    rng = np.random.default_rng(seed)
    patch, channels = 8, 8
    grid = 112 // patch
    conv_w = rng.normal(0.0, 0.2, (channels, 3, patch, patch)).astype(np.float32)
    conv_b = rng.normal(0.0, 0.1, (channels,)).astype(np.float32)
    fc_w = rng.normal(0.0, 0.05, (channels * grid * grid, embedding_dim)).astype(np.float32)
    fc_b = rng.normal(0.0, 0.05, (embedding_dim,)).astype(np.float32)
    nodes = [
        # Node names must not start with "Sub"/"Mul": insightface would then assume MXNet preprocessing.
        helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["h1"], name="patch_conv", strides=[patch, patch]),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("Flatten", ["h2"], ["h3"], name="flatten", axis=1),
        helper.make_node("Gemm", ["h3", "fc_w", "fc_b"], ["embedding"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["None", embedding_dim])],
        initializer=[
            numpy_helper.from_array(conv_w, "conv_w"),
            numpy_helper.from_array(conv_b, "conv_b"),
            numpy_helper.from_array(fc_w, "fc_w"),
            numpy_helper.from_array(fc_b, "fc_b"),
        ],
    )
    return _finish(graph)


def _head(
    prefix: str, pooled: str, weight: np.ndarray, bias: np.ndarray, width: int, out: str, sigmoid: bool
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """1x1 conv over a pooled map, then (1, C, h, w) -> (h * w * anchors, width) in SCRFD's row order."""
    conv_out = f"{prefix}_conv"
    nodes = [helper.make_node("Conv", [pooled, f"{prefix}_w", f"{prefix}_b"], [conv_out], name=f"{prefix}_conv")]
    src = conv_out
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", [conv_out], [f"{prefix}_sig"], name=f"{prefix}_sigmoid"))
        src = f"{prefix}_sig"
    nodes += [
        helper.make_node("Transpose", [src], [f"{prefix}_t"], name=f"{prefix}_transpose", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", [f"{prefix}_t", f"{prefix}_shape"], [out], name=f"{prefix}_reshape"),
    ]
    inits = [
        numpy_helper.from_array(weight, f"{prefix}_w"),
        numpy_helper.from_array(bias, f"{prefix}_b"),
        numpy_helper.from_array(np.array([-1, width], dtype=np.int64), f"{prefix}_shape"),
    ]
    return nodes, inits


def detection_model(seed: int = 0, gain: float = 40.0, offset: float = 20.0) -> onnx.ModelProto:
    """SCRFD-like detector (see module docstring); `seed` only perturbs the never-firing strides."""
    rng = np.random.default_rng(seed)
    anchors = 2
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    outputs: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    template = (ARCFACE_TEMPLATE_112 / 112.0).reshape(-1)  # (10,) in stride units inside the cell
    for stride in DETECTOR_STRIDES:
        pooled = f"pool{stride}"
        nodes.append(
            helper.make_node(
                "AveragePool",
                ["input.1"],
                [pooled],
                name=f"avgpool{stride}",
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            )
        )
        fires = stride == DETECTOR_FIRING_STRIDE
        score_w = np.full((anchors, 3, 1, 1), gain / 3.0 if fires else 0.0, np.float32)
        score_b = np.full((anchors,), -offset if fires else -60.0, np.float32)
        score_b += rng.normal(0.0, 0.01, anchors).astype(np.float32)
        bbox_w = np.zeros((anchors * 4, 3, 1, 1), np.float32)
        bbox_b = np.tile(np.array([0.0, 0.0, 1.0, 1.0], np.float32), anchors)
        kps_w = np.zeros((anchors * 10, 3, 1, 1), np.float32)
        kps_b = np.tile(template, anchors).astype(np.float32)
        for kind, width, weight, bias in (
            ("score", 1, score_w, score_b),
            ("bbox", 4, bbox_w, bbox_b),
            ("kps", 10, kps_w, kps_b),
        ):
            out = f"{kind}_{stride}"
            head_nodes, head_inits = _head(f"{kind}{stride}", pooled, weight, bias, width, out, kind == "score")
            nodes += head_nodes
            inits += head_inits
            outputs[kind].append(out)
    widths = {"score": 1, "bbox": 4, "kps": 10}
    graph_outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{name}", widths[kind]])
        for kind in ("score", "bbox", "kps")
        for name in outputs[kind]
    ]
    graph = helper.make_graph(
        nodes,
        "scrfd_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        graph_outputs,
        initializer=inits,
    )
    return _finish(graph)


def write_antelope_like_pack(root: str | pathlib.Path, seed: int = 0, detector: bool = True) -> pathlib.Path:
    """Write the stand-in models to `root/models/antelopev2/`; returns `root` (the FaceAnalysis root)."""
    root = pathlib.Path(root)
    pack = root / "models" / PACK_NAME
    pack.mkdir(parents=True, exist_ok=True)
    models = {RECOGNITION_FILE: recognition_model(seed)}
    if detector:
        models[DETECTION_FILE] = detection_model(seed)
    for name, model in models.items():  # temp file + rename: a killed write leaves no truncated model
        tmp = pack / f".{name}.tmp-{os.getpid()}"
        onnx.save(model, str(tmp))
        os.replace(tmp, pack / name)
    return root
