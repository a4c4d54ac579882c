"""Generators out of PyTorch: ONNX (onnxruntime) and ncnn (.param/.bin, as ncnn apps load them).

ONNX goes through torch's torch.export-based exporter (`dynamo=True`; it needs onnxscript) at opset
OPSET, with dynamic batch, height and width. Its fp16 variant stores every float initializer as fp16
behind a Cast to fp32: the file is half the size, while inputs, outputs and arithmetic stay fp32, so
it runs on any onnxruntime build (CPU kernels included); only the weights are rounded.

That exporter spends ~10 s per network in torch.export's decompositions (2-block RRDBNet, 2 CPU
cores), whatever its width. An RRDBNet's ONNX graph depends on its block count, scale and image
channels only (widths live in the weights), so each such graph is exported once per process, from a
network whose every weight is non-zero (the exporter drops all-zero biases, as BasicSR initialises
them), and each network gets its own weights in it, by state-dict name. onnx_max_abs_diffs checks
every file against PyTorch.

ncnn: pnnx (ncnn's own converter; it reads TorchScript, which is why torch.jit stays here, and in
esrkd.fid, whose Inception ships only as TorchScript) converts one network per architecture; its
blobs are renamed `data`/`output` as in RealSR's and Real-ESRGAN's files, its side files are left
in a temporary folder, and every network's .bin is written by esrkd.ncnn.write_weights in pnnx's
layout (fp16 weights with ncnn's fp16 tag, fp32 biases), one run of pnnx serving every network of
an architecture (~3 s each). pnnx's memory grows ~1.7x with each RRDB block (measured peak RSS: 16 blocks
0.36 GB, 19 blocks 1.6 GB, 23 blocks over 20 GB, OOM-killed here), so it converts nets of at most two blocks:
for more, it converts the same net with one and with two, and the lines the second block adds (an RRDB reads
its input blob alone) are repeated, renamed. For 3 and 4 blocks that graph equals pnnx's own up to blob and
layer names (tests/test_export.py), and a 23-block net runs in the ncnn runtime as in PyTorch (test_ncnn.py).
The .bin's fp16 rounding is numpy's (nearest, ties to even, subnormals kept); pnnx flushes fp16 subnormals to zero and rounds ties up: 0.6% of a student's values differ, by 1 ulp
or by under 6.1e-5 (tests/test_ncnn.py).
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from esrkd.arch import RRDBArgs, RRDBNet
from esrkd.errors import UserError
from esrkd.ncnn import read_graph, write_weights
from esrkd.outputs import atomic_file

OPSET = 20  # torch 2.14's dynamo exporter's own; onnxruntime runs it from 1.17 on
INPUT, OUTPUT = "lr", "sr"
NCNN_INPUT, NCNN_OUTPUT = "data", "output"  # the blob names of RealSR's and Real-ESRGAN's ncnn files
ARCH_KEY = "esrkd.arch_args"  # ONNX metadata: lets `esrkd upscale` know the network it runs


def _example(args: RRDBArgs, side: int = 16) -> torch.Tensor:
    """A small float32 LR batch the network accepts (x2 RRDBNet needs even sides)."""
    return torch.rand(1, args.num_in_ch, side, side)


def _dense(args: RRDBArgs) -> RRDBNet:
    """RRDBNet(args) with every weight and bias non-zero, so that no exporter folds one away."""
    net = RRDBNet(args).eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            t.uniform_(0.01, 0.02)
    return net


@cache
def _onnx_graph(num_block: int, scale: int, num_in_ch: int, num_out_ch: int) -> onnx.ModelProto:
    """The ONNX graph of every RRDBNet with these numbers (module docstring); do not modify it."""
    args = RRDBArgs(num_feat=8, num_block=num_block, num_grow_ch=8, scale=scale, num_in_ch=num_in_ch, num_out_ch=num_out_ch)
    dynamic = ({0: "batch", 2: "height", 3: "width"},)
    program = torch.onnx.export(_dense(args), (_example(args),), dynamo=True, opset_version=OPSET, verbose=False,
                                input_names=[INPUT], output_names=[OUTPUT], dynamic_shapes=dynamic)
    model = program.model_proto
    del model.graph.value_info[:]  # intermediate shapes hold the template's widths; onnxruntime infers them
    for item in (*model.graph.node, *model.graph.input, *model.graph.output):
        del item.metadata_props[:]  # the exporter's debug notes: stack traces naming this machine's source paths
    return model


def onnx_model(net: RRDBNet) -> onnx.ModelProto:
    """`net` as ONNX, in memory: input "lr", output "sr", float32 NCHW, any batch, height and width; its
    architecture in the metadata."""
    a = net.args
    model = copy.deepcopy(_onnx_graph(a.num_block, a.scale, a.num_in_ch, a.num_out_ch))
    state = {k: v.detach().cpu().float().numpy() for k, v in net.state_dict().items()}
    inits = {init.name: init for init in model.graph.initializer}
    missing = sorted(set(state) - set(inits))
    assert not missing, f"the exported graph lacks {missing}"  # _dense keeps every parameter
    for name, value in state.items():
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    onnx.helper.set_model_props(model, {ARCH_KEY: json.dumps(a.asdict())})
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


PNNX_BLOCKS = 2  # the most RRDBs pnnx converts; more repeat its second (module docstring)


@cache
def _pnnx_param(args: RRDBArgs) -> tuple[str, ...]:
    """The lines of RRDBNet(args)'s ncnn .param as pnnx writes it (blobs in0 -> out0)."""
    import pnnx

    with tempfile.TemporaryDirectory() as tmp:
        pt = Path(tmp) / "g.pt"
        # pnnx reads TorchScript: a trace is its input format
        torch.jit.trace(_dense(args), _example(args), check_trace=False).save(str(pt))
        # its binary, not pnnx.convert, which also imports the Python model it writes; a second input
        # size marks height and width dynamic
        shapes = [f"inputshape{n}=[1,{args.num_in_ch},{side},{side}]f32" for n, side in (("", 16), ("2", 24))]
        done = subprocess.run([pnnx.EXEC_PATH, pt.name, *shapes, "device=cpu"], cwd=tmp, capture_output=True, timeout=600)
        if done.returncode != 0:
            raise UserError(f"pnnx could not convert an RRDBNet with {args} (exit {done.returncode}): "
                            f"{done.stderr.decode(errors='replace').strip()[-300:]}; ship ONNX instead.")
        return tuple((Path(tmp) / "g.ncnn.param").read_text().splitlines())


def _blobs(fields: list[str]) -> tuple[list[str], list[str]]:
    """The input and output blobs of a .param layer line, split into fields."""
    n_in, n_out = int(fields[2]), int(fields[3])
    return fields[4:4 + n_in], fields[4 + n_in:4 + n_in + n_out]


def _renamed(fields: list[str], blobs: dict[str, str], suffix: str = "") -> str:
    """A .param layer line from its fields, its blobs renamed by `blobs` and `suffix` added to its name."""
    n = 4 + int(fields[2]) + int(fields[3])
    return " ".join([fields[0], fields[1] + suffix, *fields[2:4], *(blobs.get(b, b) for b in fields[4:n]), *fields[n:]])


def _repeat_block(one: tuple[str, ...], two: tuple[str, ...], num_block: int) -> list[str]:
    """The .param of an RRDBNet of `num_block` blocks from pnnx's graphs of the same net with one and two:
    the lines the second RRDB adds, fed by the first's output alone, are repeated with renamed blobs and
    layers, and the tail reads the last copy's output."""
    start = next(i for i in range(2, len(one)) if one[i] != two[i])
    block = [line.split() for line in two[start:start + len(two) - len(one)]]
    made = [blob for fields in block for blob in _blobs(fields)[1]]
    feed, out = _blobs(block[0])[0][0], made[-1]
    assert all(b in made or b == feed for fields in block for b in _blobs(fields)[0]), "an RRDB reads only its input"
    lines, last = list(two[:start + len(block)]), out
    for copy in range(1, num_block - 1):
        names = {blob: f"{blob}_{copy}" for blob in made} | {feed: last}
        lines += [_renamed(fields, names, f"_{copy}") for fields in block]
        last = names[out]
    lines += [_renamed(line.split(), {out: last}) for line in two[start + len(block):]]
    lines[1] = f"{len(lines) - 2} {int(two[1].split()[1]) + len(made) * (num_block - 2)}"  # layer and blob counts
    return lines


@cache
def _ncnn_param(args: RRDBArgs) -> str:
    """The text of RRDBNet(args)'s ncnn .param, made by pnnx, blobs renamed (module docstring)."""
    if args.num_block <= PNNX_BLOCKS:
        lines = list(_pnnx_param(args))
    else:
        lines = _repeat_block(*(_pnnx_param(replace(args, num_block=n)) for n in (1, 2)), args.num_block)
    names = {"in0": NCNN_INPUT, "out0": NCNN_OUTPUT}
    for i, line in enumerate(lines[2:], start=2):
        fields = line.split()
        fields[1] = names.get(fields[1], fields[1])  # the Input layer is named after its blob, as in RealSR's file
        lines[i] = _renamed(fields, names)
    return "\n".join(lines) + "\n"


def export_ncnn(net: RRDBNet, path: Path) -> int:
    """Write `net` as `path` (.param, blobs "data" -> "output", float32 NCHW in [0, 1], any size) and the
    .bin beside it (fp16 weights). Returns the two files' bytes."""
    param, weights = Path(path).with_suffix(".param"), Path(path).with_suffix(".bin")
    with atomic_file(param) as tmp:
        tmp.write_text(_ncnn_param(net.args))
    convs, args, names = read_graph(param)  # esrkd's reader: the graph is an RRDBNet, and the order of its convs
    assert args == net.args, f"pnnx's graph is {args}, not {net.args}"
    with atomic_file(weights) as tmp:
        write_weights(tmp, net.state_dict(), names)
    return param.stat().st_size + weights.stat().st_size


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
