"""Generators out of PyTorch: ONNX (dynamic batch, height and width) and TorchScript files.

ONNX goes through torch's TorchScript-based exporter (`dynamo=False`: no onnxscript needed) at
opset OPSET. Its fp16 variant stores every float initializer as fp16 behind a Cast to fp32: the
file is half the size, while inputs, outputs and arithmetic stay fp32, so it runs on any
onnxruntime build (CPU kernels included); only the weights are rounded.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from esrkd.arch import RRDBNet
from esrkd.outputs import atomic_file

OPSET = 17
INPUT, OUTPUT = "lr", "sr"
ARCH_KEY = "esrkd.arch_args"  # ONNX metadata: lets `esrkd upscale` know the network it runs


def _example(net: RRDBNet) -> torch.Tensor:
    """A small float32 LR batch the network accepts (x2 RRDBNet needs even sides)."""
    return torch.rand(1, net.args.num_in_ch, 16, 16)


def onnx_model(net: RRDBNet) -> onnx.ModelProto:
    """`net` (moved to the CPU, eval mode) traced to ONNX in memory: input "lr", output "sr", float32 NCHW,
    any batch, height and width; its architecture in the metadata."""
    net = net.cpu().float().eval()
    dynamic = {INPUT: {0: "batch", 2: "height", 3: "width"}, OUTPUT: {0: "batch", 2: "sr_height", 3: "sr_width"}}
    buffer = io.BytesIO()
    torch.onnx.export(net, (_example(net),), buffer, dynamo=False, opset_version=OPSET,
                      input_names=[INPUT], output_names=[OUTPUT], dynamic_axes=dynamic)
    model = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(model, {ARCH_KEY: json.dumps(net.args.asdict())})
    return model


def save_onnx(model: onnx.ModelProto, path: Path, fp16: bool = False) -> int:
    """Write an `onnx_model` (its fp16 variant with `fp16`, leaving `model` as it is), checked; returns the file's bytes."""
    if fp16:
        model = copy.deepcopy(model)
        _fp16_initializers(model.graph)
    onnx.checker.check_model(model)
    with atomic_file(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path).stat().st_size


def export_onnx(net: RRDBNet, path: Path, fp16: bool = False) -> int:
    """save_onnx(onnx_model(net), path, fp16): one file; trace once with onnx_model for both variants."""
    return save_onnx(onnx_model(net), path, fp16)


def _fp16_initializers(graph: onnx.GraphProto) -> None:
    """Store float32 initializers as fp16, each cast back to float32 under its own name for the nodes that use it."""
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{name}.fp16"))
        casts.append(onnx.helper.make_node("Cast", [init.name], [name], to=onnx.TensorProto.FLOAT))
    nodes = [*casts, *graph.node]  # casts first: the graph must stay topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)


def export_torchscript(net: RRDBNet, path: Path) -> int:
    """Write `net` (moved to the CPU, eval mode) traced to TorchScript: float32 NCHW, any batch, height
    and width. Returns the file's bytes."""
    net = net.cpu().float().eval()
    with torch.no_grad(), warnings.catch_warnings(), atomic_file(path) as tmp:
        # torch 2.14 calls TorchScript deprecated; it is still the format asked for, and it works
        warnings.filterwarnings("ignore", r"`torch\.jit", FutureWarning)
        torch.jit.save(torch.jit.trace(net, _example(net)), str(tmp))
    return Path(path).stat().st_size


def params_bytes(net: RRDBNet) -> int:
    """Bytes of one copy of the weights as held in memory (a net_g.pth holds two: params and params_ema)."""
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def onnx_max_abs_diffs(net: RRDBNet, paths: list[Path], x: torch.Tensor) -> list[float]:
    """Largest |onnxruntime (CPU) - PyTorch| over the output for the float32 batch `x`, for each ONNX file of
    `net` in `paths` (PyTorch's output is computed once)."""
    import onnxruntime as ort

    with torch.no_grad():
        expected = net.cpu().float().eval()(x).numpy()
    sessions = [ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for path in paths]
    return [float(np.abs(session.run([OUTPUT], {INPUT: x.numpy()})[0] - expected).max()) for session in sessions]
