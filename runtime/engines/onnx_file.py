"""A graph file as an engine gets it: read once, checked against the manifest and self-contained.

The bytes whose size and sha256 are checked are the bytes the engine parses (onnxruntime from memory,
TensorRT's parser from a buffer), so a file swapped after `load_bundle` hashed it is caught too. ONNX may
keep tensors outside the graph ("external data": data_location EXTERNAL and a file name, for onnxruntime
even a memory address); such a file is in no manifest, so editing it would change the pictures while
every hash still matched. A bundle's graphs must hold all their tensors: any external one is refused
before an engine sees the bytes (loaded from memory, onnxruntime would look for the file in the current
folder). `gen export` never writes external data (gen.export.onnx_graph.save_graph).

Nor control flow: a Loop (or Scan) may run for 2**63 iterations and an engine has no time limit, so a graph
holding one, or any node with a subgraph of its own (If, onnxruntime's BeamSearch...), is refused too.

The tensors are found with a small reader of protobuf's wire format: the runtime does not depend on the
onnx package.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from gen.runtime.bundle import BundleError, FileEntry, clip

# Where onnx.proto (onnx-ml.proto) keeps tensors, and the messages on the way to them: message -> {field: message}.
_FIELDS = {
    "model": {7: "graph", 20: "training", 25: "function"},  # ModelProto.graph, training_info, functions
    "graph": {1: "node", 5: "tensor", 15: "sparse"},  # GraphProto.node, initializer, sparse_initializer
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},  # t g tensors
    "sparse": {1: "tensor", 2: "tensor"},  # SparseTensorProto.values, indices
    "training": {1: "graph", 2: "graph"},  # TrainingInfoProto.initialization, algorithm
    "function": {7: "node", 11: "attribute"},  # FunctionProto.node, attribute_proto (default values)
}
_TENSOR_NAME, _EXTERNAL_DATA, _DATA_LOCATION, _EXTERNAL = 8, 13, 14, 1  # TensorProto fields; DataLocation.EXTERNAL
_OP_TYPE, _ATTRIBUTE, _SUBGRAPHS = 4, 5, (6, 11)  # NodeProto.op_type, .attribute; AttributeProto.g, .graphs
CONTROL_FLOW = {"Loop", "Scan", "If"}


class Malformed(ValueError):
    """Bytes that are not protobuf's wire format."""


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise Malformed("a number runs past the end" if i >= len(buf) else "a number of more than 10 bytes")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return value, i


def _fields(buf: memoryview):
    """(field number, wire type, value): an int for varints, a memoryview for length-delimited fields."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            value, i = None, i + (8 if wire == 1 else 4)
        else:  # groups (3, 4) are in no ONNX message; 6 and 7 are no wire type at all
            raise Malformed(f"field {number} has wire type {wire}")
        if i > len(buf):
            raise Malformed(f"field {number} runs past the end")
        yield number, wire, value


def _messages(model: bytes):
    """(kind, bytes) of every message of a serialised ModelProto on the way to its tensors and nodes, in subgraphs
    and functions too. Raises Malformed for bytes that are not protobuf."""
    stack = [("model", memoryview(model))]
    while stack:  # a list, not recursion: subgraphs may nest deeply
        kind, buf = stack.pop()
        yield kind, buf
        if inner := _FIELDS.get(kind):
            stack.extend((inner[n], value) for n, wire, value in _fields(buf) if wire == 2 and n in inner)


def external_tensor(model: bytes) -> tuple[str, str] | None:
    """The first tensor of a serialised ModelProto that keeps its data outside it, as (name, where), or None.
    Raises Malformed for bytes that are not protobuf. Every occurrence of a tensor counts (protobuf merges
    repeated occurrences of a message field), so this errs on the side of refusing."""
    for kind, buf in _messages(model):
        if kind == "tensor":
            name, where, external = "", "", False
            for number, wire, value in _fields(buf):
                if number == _TENSOR_NAME and wire == 2:
                    name = bytes(value).decode("utf-8", "replace")
                elif number == _EXTERNAL_DATA:
                    external = True
                    if wire == 2:  # StringStringEntryProto: key 1, value 2
                        entry = {n: bytes(v).decode("utf-8", "replace") for n, w, v in _fields(value) if w == 2}
                        if entry.get(1) == "location":
                            where = entry.get(2, "")
                elif number == _DATA_LOCATION and wire == 0 and (value & 0xFFFFFFFF) == _EXTERNAL:  # int32 enum
                    external = True
            if external:
                return name, where
    return None


def control_flow(model: bytes) -> set[str]:
    """The op types of a serialised ModelProto's nodes (in subgraphs and functions too) that are Loop, Scan or If,
    or hold a subgraph of their own. Raises Malformed for bytes that are not protobuf."""
    found = set()
    for kind, buf in _messages(model):
        if kind == "node":
            op, nested = "", False
            for number, wire, value in _fields(buf):
                if number == _OP_TYPE and wire == 2:
                    op = bytes(value).decode("utf-8", "replace")
                elif number == _ATTRIBUTE and wire == 2:
                    nested |= any(n in _SUBGRAPHS for n, _, _ in _fields(value))
            if op in CONTROL_FLOW or nested:
                found.add(clip(op, 40))
    return found


def read_graph(path: Path, entry: FileEntry | None = None, engine: str = "onnxruntime") -> bytes:
    """The graph file's bytes, checked against its manifest entry (size, sha256) when given, and self-contained;
    `engine` names who was to load it, for the message about a damaged file."""
    try:
        # O_NONBLOCK: a FIFO in the file's place does not wait for a writer (and is refused below)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"'{path}' is not a regular file; copy the bundle again or re-export")
            if entry is not None and st.st_size != entry.size:  # (before reading: it may be huge)
                raise BundleError(f"'{path}' is {st.st_size} bytes, the manifest says {entry.size}: it changed "
                                  "after the bundle was loaded, or a damaged copy; copy the bundle again")
            data = f.read()
    except OSError as e:
        raise BundleError(f"'{path}' cannot be read ({clip(e.strerror or e)}); check the bundle's permissions or "
                          "copy it again") from None
    if entry is not None and hashlib.sha256(data).hexdigest() != entry.sha256:
        raise BundleError(f"'{path}' fails its sha256 check: it changed after the bundle was loaded, or a corrupt "
                          "copy; copy the bundle again")
    try:
        found, flow = external_tensor(data), control_flow(data)
    except Malformed as e:
        raise BundleError(f"'{path}' cannot be loaded by {engine} (not ONNX's protobuf: {e}); the file is damaged "
                          "or not ONNX: copy the bundle again or re-export") from None
    if found is not None:
        name, where = found
        raise BundleError(f"'{path}' keeps tensor '{clip(name, 80)}' in another file ({clip(where or '?', 80)}), "
                          "which no hash in manifest.json covers; a bundle's graphs must hold their own weights: "
                          "re-export the bundle with `gen export`")
    if flow:
        raise BundleError(f"'{path}' holds control flow ({', '.join(sorted(flow))}), which `gen export` never writes "
                          "and which can run without end; re-export the bundle with `gen export`")
    return data
