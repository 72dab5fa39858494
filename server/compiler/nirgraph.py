"""NIR graphs (the ``nir`` package's HDF5 files) -> layer graph.

NIR shapes leave out the batch dimension (a ``Flatten`` with ``start_dim=0`` flattens
``(C, H, W)``); the layer graph uses torch's convention, so dimensions shift by one here.
A node with several incoming edges sums them (NIR's rule), which becomes an explicit
:class:`Add`. Nested graphs are flattened, their inner Input/Output nodes passed through.
NIR's ``IF`` resets to ``v_reset``; the chip subtracts the threshold (as the vendor's
pipeline, whose exporter writes its subtract-reset neurons as ``IF``): see ``convert.py``.

Before ``nir.read`` builds anything, one walk over the file's links bounds what reading it
costs (``nir.read`` took 32 s on 300 graphs nested in each other): graphs nested at most
:data:`MAX_DEPTH` deep, at most :data:`MAX_NODES` nodes and :data:`MAX_EDGES` edges in
all, the datasets' unpacked size; it stops at the first bound crossed. Links to other files
or paths (HDF5 external and soft links) are refused: h5py would follow them.
"""

from __future__ import annotations

import heapq
import io
from typing import Any

import numpy as np

from .errors import ArchiveBomb, CorruptArchive, InputError, UnsafeArchive, UnsupportedLayer
from .graph import (
    GRAPH_INPUT,
    Add,
    Conv,
    Flatten,
    IntegrateFire,
    LayerGraph,
    Linear,
    Op,
    Pair,
    Pool,
    Unsupported,
)

_OTHER_NEURONS = {"LIF", "LI", "I", "CubaLI", "CubaLIF", "Threshold"}

#: Graphs nested in graphs (a chip network needs one or two levels).
MAX_DEPTH = 8
#: Nodes in all graphs together (a chip network has a few dozen).
MAX_NODES = 256
#: Edges in all graphs together.
MAX_EDGES = 4 * MAX_NODES
#: HDF5 groups and datasets (a node holds a handful of parameters): h5py visits one in about a
#: millisecond, so this bounds the walk to a few seconds.
_MAX_OBJECTS = 8 * MAX_NODES
#: Path components of an HDF5 object at the deepest nesting allowed: ``node``, then per
#: level ``nodes/<name>``, then a parameter and a group inside it.
_MAX_PATH_DEPTH = 2 * MAX_DEPTH + 4


def load_nir(data: bytes, max_unpacked_bytes: int) -> LayerGraph:
    import h5py
    import nir

    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            if "node" not in handle:
                raise CorruptArchive("the HDF5 file holds no NIR graph (no 'node' group)")
            total = _Inventory(handle).walk()
        if total > max_unpacked_bytes:
            raise ArchiveBomb(
                f"the NIR file's datasets unpack to {total} bytes, "
                f"over the limit of {max_unpacked_bytes}"
            )
        graph = nir.read(io.BytesIO(data), type_check=False)
    except (ArchiveBomb, CorruptArchive, UnsafeArchive):
        raise
    except Exception as exc:  # h5py and nir raise OSError, KeyError, ValueError, ...
        raise CorruptArchive(f"the NIR file cannot be read: {exc}") from exc
    return from_nir(graph)


class _Inventory:
    """One walk over an HDF5 file's links, refusing the first bound crossed."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.bytes = self.objects = self.nodes = self.edges = 0

    def walk(self) -> int:
        """The datasets' unpacked size in bytes."""
        # h5py stops a visit when the callback returns a value; an exception raised inside
        # one comes out garbled, so the refusal is returned and raised here
        refusal = self.handle.visititems_links(self._visit)
        if refusal is not None:
            raise refusal
        return self.bytes

    def _visit(self, name: str, link: Any) -> InputError | None:
        try:
            self._check(name, link)
        except InputError as exc:
            return exc
        return None

    def _check(self, name: str, link: Any) -> None:
        import h5py

        if not isinstance(link, h5py.HardLink):
            kind = "another file" if isinstance(link, h5py.ExternalLink) else "another path"
            raise UnsafeArchive(f"the NIR file links {name!r} to {kind}; h5py would follow it")
        parts = name.split("/")
        depth = parts.count("nodes")
        if depth > MAX_DEPTH or len(parts) > _MAX_PATH_DEPTH:
            raise ArchiveBomb(
                f"the NIR file nests graphs more than {MAX_DEPTH} levels deep (at {name!r})"
            )
        self.objects += 1
        self.nodes += len(parts) > 1 and parts[-2] == "nodes"
        if self.objects > _MAX_OBJECTS or self.nodes > MAX_NODES:
            raise ArchiveBomb(
                f"the NIR file holds more than {MAX_NODES} nodes or {_MAX_OBJECTS} HDF5 objects"
            )
        item = self.handle[name]
        if isinstance(item, h5py.Dataset):
            self.bytes += int(item.size) * item.dtype.itemsize
            if parts[-1] == "edges":
                self.edges += int(item.shape[0]) if item.shape else 0
                if self.edges > MAX_EDGES:
                    raise ArchiveBomb(f"the NIR file holds more than {MAX_EDGES} edges")


def _flatten(graph: Any, prefix: str = "") -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Nodes and edges with nested graphs inlined; names of inner nodes get ``outer.``."""
    import nir

    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    subgraphs: dict[str, Any] = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = _flatten(node, f"{prefix}{name}.")
            nodes.update(inner_nodes)
            edges.extend(inner_edges)
            subgraphs[name] = node
        else:
            nodes[prefix + name] = node

    def ends(name: str, kind: type) -> list[str]:
        if name in subgraphs:
            inner = subgraphs[name].nodes
            return [f"{prefix}{name}.{k}" for k, v in inner.items() if isinstance(v, kind)]
        return [prefix + name]

    for source, target in graph.edges:
        for s in ends(source, nir.Output):
            for t in ends(target, nir.Input):
                edges.append((s, t))
    return nodes, edges


def _order(names: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Topological order, ties broken by the file's node order (deterministic)."""
    position = {name: i for i, name in enumerate(names)}
    pending = dict.fromkeys(names, 0)
    targets: dict[str, list[str]] = {name: [] for name in names}
    for source, target in edges:
        if source in targets and target in pending:
            pending[target] += 1
            targets[source].append(target)
    ready = [position[name] for name, count in pending.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        ordered.append(name)
        for target in targets[name]:
            pending[target] -= 1
            if pending[target] == 0:
                heapq.heappush(ready, position[target])
    if len(ordered) != len(names):
        cycle = sorted(set(names) - set(ordered))
        raise UnsupportedLayer(f"the NIR graph has a cycle through {cycle}")
    return ordered


def _pair(value: Any) -> Pair:
    items = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return (items[0], items[0]) if len(items) == 1 else (items[0], items[1])


def _op(node: Any) -> Op:
    import nir

    kind = type(node).__name__
    if isinstance(node, nir.Conv2d):
        padding = node.padding
        if not isinstance(padding, str):
            padding = _pair(padding)
        return Conv(
            weight=np.asarray(node.weight, dtype=np.float32),
            bias=np.asarray(node.bias, dtype=np.float32),
            stride=_pair(node.stride),
            padding=padding,
            dilation=_pair(node.dilation),
            groups=int(node.groups),
        )
    if isinstance(node, nir.Affine | nir.Linear):
        bias = getattr(node, "bias", None)
        return Linear(
            weight=np.asarray(node.weight, dtype=np.float32),
            bias=None if bias is None else np.asarray(bias, dtype=np.float32),
        )
    if isinstance(node, nir.IF):
        return IntegrateFire(
            threshold=np.asarray(node.v_threshold, dtype=np.float32),
            r=np.asarray(node.r, dtype=np.float32),
            v_reset=np.asarray(node.v_reset, dtype=np.float32),
        )
    if isinstance(node, nir.SumPool2d | nir.AvgPool2d):
        return Pool(
            mode="sum" if isinstance(node, nir.SumPool2d) else "avg",
            kernel=_pair(node.kernel_size),
            stride=_pair(node.stride),
            padding=_pair(node.padding),
        )
    if isinstance(node, nir.Flatten):
        # NIR dimensions leave out the batch; torch's count it
        start, end = int(node.start_dim), int(node.end_dim)
        return Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
    if kind in _OTHER_NEURONS:
        return Unsupported(f"{kind} neurons: the chip has integrate-and-fire neurons only")
    return Unsupported(f"NIR {kind} has no chip equivalent")


def from_nir(graph: Any) -> LayerGraph:
    """A NIR graph object (``nir.NIRGraph``) -> layer graph."""
    import nir

    nodes, edges = _flatten(graph)
    top_inputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(top_inputs) != 1:
        raise UnsupportedLayer(
            f"the NIR graph has {len(top_inputs)} inputs; a chip network has one"
        )
    out = LayerGraph(format="nir")
    shape = np.asarray(graph.nodes[top_inputs[0]].input_type["input"]).astype(int).tolist()
    out.input_shape = tuple(shape)
    value: dict[str, int] = {}
    outputs: list[int] = []
    incoming: dict[str, list[str]] = {name: [] for name in nodes}
    for source, target in edges:
        if target in incoming:
            incoming[target].append(source)
    for name in _order(list(nodes), edges):
        node = nodes[name]
        sources = [value[s] for s in incoming[name] if s in value]
        if name == top_inputs[0]:
            value[name] = GRAPH_INPUT
            continue
        if len(sources) > 1:
            sources = [out.add(Add(), tuple(sources), "sum of inputs", name)]
        if isinstance(node, nir.Input | nir.Output):
            if not sources:
                continue
            value[name] = sources[0]
            if isinstance(node, nir.Output) and name in graph.nodes:
                outputs.append(sources[0])
            continue
        value[name] = out.add(_op(node), tuple(sources), type(node).__name__, name)
    out.outputs = tuple(outputs)
    return out
