"""The channel dependency graph: which channels of which layers must be removed together.

The model is traced with torch.fx and its shapes propagated with an example input. Every output
channel of a convolution or linear layer (and of the model input) is an *element*; every tensor
in the graph carries the list of elements that make up its channel dimension (dim 1). Operations
then relate elements:

- batch norm, activations, pooling, dropout: the list passes through unchanged;
- a depthwise convolution passes its input list through (channel i in, channel i out);
- an addition or multiplication of two tensors unites their lists position by position, so the
  channels of a residual stage end up in one class;
- concatenation along the channels concatenates the lists;
- flatten repeats each channel's element once per spatial position (flatten -> linear).

Union-find over the elements gives the *channel classes*: a class is removed as a whole, from
every producer (output rows), per-channel layer (batch norm, depthwise convolution) and consumer
(input columns) that holds it. Classes that touch the model input or output, a buffer, a grouped
convolution, or an operation that maps zero to non-zero (so removing the channel would change
the output) are frozen.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from robustcompress.errors import UnsupportedModelError
from robustcompress.modes import eval_mode

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# zero in, zero out, channel i in -> channel i out
PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish, nn.Tanh, nn.Hardtanh,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)  # fmt: skip
# channel i in -> channel i out, but zero in gives non-zero out: channels stay
FREEZE_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus, nn.Softmax, nn.LogSoftmax)
PASS_FUNCTIONS = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "elu", "silu", "gelu", "mish",
    "hardswish", "tanh", "dropout", "dropout1d", "dropout2d", "contiguous", "clone", "detach", "neg",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "abs",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "identity", "interpolate",
}  # fmt: skip
FREEZE_FUNCTIONS = {"sigmoid", "hardsigmoid", "softplus", "exp", "cos", "softmax", "log_softmax"}
ADD = {"add", "add_", "iadd", "sub", "sub_", "isub"}
MUL = {"mul", "mul_", "imul", "truediv", "div", "div_", "itruediv"}
CAT = {"cat", "concat", "concatenate"}
REDUCE = {"mean", "sum", "amax", "amin"}
FLATTEN = {"flatten"}
RESHAPE = {"view", "reshape"}
NO_TENSOR = {"size", "dim", "getattr", "numel"}


@dataclass
class LayerUse:
    """A module with channel-indexed tensors, and the elements of its input and output channels."""

    name: str
    module: nn.Module
    kind: str  # "conv" | "linear" (producers), "depthwise" | "norm" (per channel), "fixed" (left alone)
    in_ids: list[int]
    out_ids: list[int]


@dataclass
class ChannelClass:
    """Channels removed together: `producers` maps a layer name to its output positions in the class."""

    root: int
    producers: dict[str, list[int]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(sorted(self.producers))


class DependencyGraph:
    """Channel classes of a model; build it with `DependencyGraph.build(model, example_input)`."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.parent: list[int] = []
        self.frozen: set[int] = set()
        self.layers: dict[str, LayerUse] = {}

    # -- union-find --------------------------------------------------------------------------
    def new(self, n: int, frozen: bool = False) -> list[int]:
        start = len(self.parent)
        ids = list(range(start, start + n))
        self.parent.extend(ids)
        if frozen:
            self.frozen.update(ids)
        return ids

    def find(self, e: int) -> int:
        root = e
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[e] != root:
            self.parent[e], e = root, self.parent[e]
        return root

    def union(self, a: list[int], b: list[int]) -> None:
        for x, y in zip(a, b):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx

    def freeze(self, ids: list[int] | None) -> None:
        if ids:
            self.frozen.update(ids)

    def is_frozen(self, root: int) -> bool:
        return root in self._frozen_roots

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def build(cls, model: nn.Module, example_input: torch.Tensor) -> DependencyGraph:
        graph = cls(model)
        gm = _trace(model)
        try:
            with torch.no_grad(), eval_mode(model):
                _MetaShapeProp(gm).propagate(example_input.to("meta"))
        except Exception as exc:  # noqa: BLE001 - any failure here is the model's, named in the message
            raise UnsupportedModelError(
                f"running {type(model).__name__} on an example input of shape {tuple(example_input.shape)} "
                f"failed while building the channel graph: {exc}"
            ) from exc
        ids: dict[fx.Node, list[int] | None] = {}
        for node in gm.graph.nodes:
            ids[node] = graph._visit(gm, node, ids)
        graph._couple_shared_modules()
        graph._frozen_roots = {graph.find(e) for e in graph.frozen}
        return graph

    def _visit(self, gm: fx.GraphModule, node: fx.Node, ids: dict) -> list[int] | None:
        shape = _shape(node)
        if node.op == "placeholder":
            return self.new(shape[1], frozen=True) if shape and len(shape) >= 2 else None
        if node.op == "get_attr":
            return self.new(shape[1], frozen=True) if shape and len(shape) >= 2 else None
        if node.op == "output":
            for arg in _nodes_in(node.args):
                self.freeze(ids.get(arg))
            return None
        if node.op == "call_module":
            return self._visit_module(node, gm.get_submodule(node.target), ids)
        name = (
            node.target
            if isinstance(node.target, str)
            else getattr(node.target, "__name__", str(node.target))
        )
        return self._visit_function(node, name.strip("_") if name.startswith("__") else name, ids, shape)

    def _visit_module(self, node: fx.Node, module: nn.Module, ids: dict) -> list[int] | None:
        x = ids.get(node.args[0]) if node.args else None
        name = str(node.target)
        if isinstance(module, CONV):
            if x is None or len(x) != module.in_channels:
                raise _unsupported(node, f"{type(module).__name__} {name!r} receives an unexpected input")
            if module.groups == 1:
                out = self.new(module.out_channels)
                self._use(name, module, "conv", x, out)
            elif module.groups == module.in_channels == module.out_channels:
                out = x
                self._use(name, module, "depthwise", x, out)
            else:  # grouped convolution or channel multiplier: its channels stay
                self.freeze(x)
                out = self.new(module.out_channels, frozen=True)
                self._use(name, module, "fixed", x, out)
            return out
        if isinstance(module, nn.Linear):
            in_shape = _shape(node.args[0])
            if x is None or in_shape is None or len(in_shape) != 2:
                raise _unsupported(
                    node, f"Linear {name!r} on a tensor of shape {in_shape} (only (batch, features))"
                )
            out = self.new(module.out_features)
            self._use(name, module, "linear", x, out)
            return out
        if isinstance(module, NORM):
            if not module.affine:
                self.freeze(x)
            self._use(name, module, "norm", x, x)
            return x
        if isinstance(module, PASS_MODULES):
            return x
        if isinstance(module, FREEZE_MODULES):
            self.freeze(x)
            return x
        if isinstance(module, nn.Flatten):
            return self._flatten(node, x, module.start_dim, module.end_dim)
        raise _unsupported(node, f"module {name!r} of type {type(module).__name__}")

    def _visit_function(self, node: fx.Node, fn: str, ids: dict, shape) -> list[int] | None:
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        x = ids.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if fn in NO_TENSOR or (shape is None and fn not in CAT):
            if fn in NO_TENSOR or not any(ids.get(t) for t in tensors):
                return None
            raise _unsupported(node, f"operation {fn!r} returning a non-tensor from channel tensors")
        if fn in PASS_FUNCTIONS:
            return x
        if fn in FREEZE_FUNCTIONS:
            self.freeze(x)
            return x
        if fn in ADD or fn in MUL:
            return self._binary(node, fn, ids)
        if fn in CAT:
            return self._cat(node, ids)
        if fn in FLATTEN:
            start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
            end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
            return self._flatten(node, x, start, end)
        if fn in RESHAPE:
            in_shape = _shape(node.args[0])
            if in_shape is not None and tuple(in_shape) == tuple(shape):
                return x
            if in_shape is not None and len(shape) == 2 and shape[0] == in_shape[0]:
                return self._flatten(node, x, 1, -1)
            raise _unsupported(node, f"{fn} from shape {in_shape} to {shape}")
        if fn in REDUCE:
            dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            in_shape = _shape(node.args[0])
            dims = [dims] if isinstance(dims, int) else list(dims or [])
            if in_shape is not None and dims and all(d % len(in_shape) >= 2 for d in dims):
                return x
            raise _unsupported(node, f"{fn} over dims {dims} (only spatial dims keep the channels)")
        if fn == "getitem" and ids.get(node.args[0]) is not None:
            raise _unsupported(node, "indexing or slicing a feature map (x[...])")
        raise _unsupported(node, f"operation {fn!r}")

    def _binary(self, node: fx.Node, fn: str, ids: dict) -> list[int] | None:
        operands = list(node.args[:2])
        lists = [ids.get(a) if isinstance(a, fx.Node) else None for a in operands]
        tensors = [lst for lst in lists if lst is not None]
        if len(tensors) == 2:
            a, b = tensors
            if len(a) == len(b):
                self.union(a, b)
                if fn in {"truediv", "div", "div_", "itruediv"}:
                    self.freeze(b)  # 0 / 0: a pruned divisor would give NaN
                return a
            short, long = (a, b) if len(a) < len(b) else (b, a)
            if len(short) == 1:  # a (N, 1, ...) tensor broadcast over the channels
                self.freeze(short)
                return long
            raise _unsupported(node, f"{fn} of tensors with {len(a)} and {len(b)} channels")
        if not tensors:
            return None
        other = operands[1] if lists[0] is not None else operands[0]
        if fn in ADD or isinstance(other, fx.Node):  # x + c maps zero to c; x * tensor: keep it safe
            self.freeze(tensors[0])
        if fn in {"truediv", "div", "div_", "itruediv"} and lists[0] is None:
            self.freeze(tensors[0])  # c / x
        return tensors[0]

    def _cat(self, node: fx.Node, ids: dict) -> list[int] | None:
        parts = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        lists = [ids.get(p) for p in parts]
        if any(lst is None for lst in lists):
            raise _unsupported(node, "concatenation of tensors without a channel dimension")
        ndim = len(_shape(node))
        if dim % ndim == 1:
            return [e for lst in lists for e in lst]
        for other in lists[1:]:
            self.union(lists[0], other)
        return lists[0]

    def _flatten(self, node: fx.Node, x: list[int] | None, start: int, end: int) -> list[int]:
        in_shape = _shape(node.args[0])
        if x is None or in_shape is None:
            raise _unsupported(node, "flatten of a tensor without channels")
        if start % len(in_shape) != 1 or end % len(in_shape) != len(in_shape) - 1:
            raise _unsupported(
                node, f"flatten(start_dim={start}, end_dim={end}) (only flatten(1) is supported)"
            )
        spatial = 1
        for s in in_shape[2:]:
            spatial *= s
        return [e for e in x for _ in range(spatial)]

    def _use(self, name: str, module: nn.Module, kind: str, in_ids: list[int], out_ids: list[int]) -> None:
        if name in self.layers:  # a module called twice: its channels are the same in both calls
            prev = self.layers[name]
            self.union(prev.in_ids, in_ids)
            self.union(prev.out_ids, out_ids)
            return
        self.layers[name] = LayerUse(name, module, kind, list(in_ids), list(out_ids))

    def _couple_shared_modules(self) -> None:
        for use in self.layers.values():
            if use.kind == "fixed":
                self.freeze(use.in_ids)
                self.freeze(use.out_ids)

    # -- queries -----------------------------------------------------------------------------
    def classes(self) -> list[ChannelClass]:
        """The prunable channel classes (not frozen, with at least one producer), in model order."""
        found: dict[int, ChannelClass] = {}
        for use in self.layers.values():
            if use.kind not in ("conv", "linear"):
                continue
            for pos, e in enumerate(use.out_ids):
                root = self.find(e)
                if self.is_frozen(root):
                    continue
                found.setdefault(root, ChannelClass(root)).producers.setdefault(use.name, []).append(pos)
        return list(found.values())

    def positions(self, roots: set[int]) -> dict[str, tuple[list[int], list[int]]]:
        """For each layer, (input positions, output positions) whose class is in `roots`."""
        out = {}
        for use in self.layers.values():
            ins = [i for i, e in enumerate(use.in_ids) if self.find(e) in roots]
            outs = [i for i, e in enumerate(use.out_ids) if self.find(e) in roots]
            if ins or outs:
                out[use.name] = (ins, outs)
        return out

    def layer_groups(self) -> dict[tuple[str, ...], list[ChannelClass]]:
        """Classes grouped by the set of layers that produce them: one group per 'layer' of Algorithm 3."""
        groups: dict[tuple[str, ...], list[ChannelClass]] = defaultdict(list)
        for c in self.classes():
            groups[c.key].append(c)
        return dict(groups)


class _MetaShapeProp(ShapeProp):
    """Shape propagation on the meta device: no arithmetic, no cold-start cost, any model size."""

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        state = {k: v.to("meta") for k, v in module.named_parameters()}
        state.update({k: v.to("meta") for k, v in module.named_buffers()})
        return torch.func.functional_call(module, state, tuple(args), dict(kwargs))

    def fetch_attr(self, target: str):
        value = super().fetch_attr(target)
        return value.to("meta") if isinstance(value, torch.Tensor) else value

    def run_node(self, n):
        try:
            return super().run_node(n)
        except RuntimeError as exc:
            raise RuntimeError(f"at graph node {n.format_node()}: {exc.__cause__ or exc}") from None


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types; all mean "cannot trace"
        raise UnsupportedModelError(
            f"channel pruning needs a torch.fx-traceable model, but tracing {type(model).__name__} failed: "
            f"{type(exc).__name__}: {exc}. Data-dependent control flow (if/for on tensor values) cannot be "
            "traced; move it out of forward() or use unstructured pruning (method 'global' or 'layerwise')."
        ) from exc


def _shape(node) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def _nodes_in(args) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n))
    return out


def _unsupported(node: fx.Node, what: str) -> UnsupportedModelError:
    where = node.format_node() if hasattr(node, "format_node") else str(node)
    return UnsupportedModelError(
        f"channel pruning does not support {what} (graph node: {where}). Supported: Conv (plain, depthwise; "
        "grouped ones are left unpruned), Linear on (batch, features), BatchNorm, ReLU-like activations, "
        "pooling, dropout, flatten, add/mul, cat. Use unstructured pruning (method 'global' or 'layerwise') "
        "for this model, or rewrite the construct with these operations."
    )
