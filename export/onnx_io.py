"""Reading and writing exported ONNX graphs, shared by export, calibration and the TensorRT stage.

A graph's weights over 1 GiB live in one side file `<graph>.onnx.data` (protobuf cannot hold 2 GiB), so reading
one may mean attaching that file, and structural passes (opset conversion, shape inference) run before the weights
are attached. Initializers are edited in place: rebuilding the list would copy every tensor, gigabytes.

`StreamedGraph` never attaches them, for graphs bigger than memory (the 7B decoder is 13.5 GB in fp16): it holds
the structure, reads a weight from its side file a chunk of rows at a time only when something asks for its values,
lets passes (fp16, weight-only quantisation) replace a weight by a function of those chunks, and writes the result
one tensor at a time into the new side file. Reads are plain reads, not memory maps: pages of a map the process has
touched count as its resident memory until unmapped, pages read through the page cache do not.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from janus_edge.runtime.errors import InternalError, ManifestError

EXTERNAL_DATA_THRESHOLD = 1 << 30  # weights above 1 GiB go to a side file
CHUNK_BYTES = 16 << 20  # about how much of one weight a streamed pass holds at once
ALIGNMENT = 4096  # each tensor in a streamed side file starts on a page boundary, as memory maps want

# rows -> a tensor's values along axis 0, each chunk a multiple of `rows` rows except perhaps the last
Chunks = Callable[[int], Iterator[np.ndarray]]


def load_graph(path: str | Path, weights: bool = True, before_weights: Callable | None = None):
    """The ModelProto at `path`; `before_weights(proto) -> proto` runs on the structure alone, then the side file
    (if any) is attached unless `weights` is False."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if before_weights is not None:
        proto = before_weights(proto)
    if weights:
        attach_weights(proto, Path(path).parent)
    return proto


def attach_weights(proto, directory: str | Path) -> None:
    """Reads the external data `proto` refers to from `directory` (a no-op for a graph without any)."""
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(proto, str(directory))


def save_graph(proto, path: Path) -> None:
    """Writes a graph (weights over 1 GiB to one side file), then checks it and its shapes."""
    _remove_stale(path)
    external = sum(init.ByteSize() for init in proto.graph.initializer) > EXTERNAL_DATA_THRESHOLD
    _write_checked(proto, path, save_as_external_data=external, all_tensors_to_one_file=True,
                   location=f"{path.name}.data", size_threshold=1024)


def has_side_file(path: Path) -> bool:
    """Whether the graph at `path` is stored with its weights in a side file (tools must then write one too)."""
    return Path(f"{path}.data").is_file()


def initializers(graph) -> dict:
    """name -> initializer of a GraphProto."""
    return {init.name: init for init in graph.initializer}


def replace_initializer(graph, old, new: list) -> None:
    """Swaps one initializer for others in place."""
    graph.initializer.remove(old)
    graph.initializer.extend(new)


def read_chunks(tensor, directory: str | Path, rows: int = 1) -> Iterator[np.ndarray]:
    """`tensor`'s values in chunks along axis 0 of about CHUNK_BYTES (a multiple of `rows` rows each, except perhaps
    the last), read from its side file in `directory` one chunk at a time, or sliced from the proto's own data."""
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import uses_external_data

    if not uses_external_data(tensor):
        yield from array_chunks(numpy_helper.to_array(tensor), rows)
        return
    if _is_4bit(tensor.data_type):
        raise InternalError(f"{tensor.name}: 4-bit weights are copied, not read as values")
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    shape = tuple(tensor.dims)
    count, row_shape = (shape[0], shape[1:]) if shape else (1, ())
    row_bytes = math.prod(row_shape) * dtype.itemsize
    path, offset, length = _external_range(tensor, directory)
    if length != count * row_bytes:
        raise ManifestError(f"{tensor.name} has {length} bytes in {path.name}, its shape {list(shape)} needs "
                            f"{count * row_bytes}", "export the model again")
    step = _chunk_rows(row_bytes, rows)
    with open(path, "rb") as data:
        for start in range(0, count, step):
            taken = min(step, count - start)
            data.seek(offset + start * row_bytes)
            chunk = np.fromfile(data, dtype=dtype, count=taken * math.prod(row_shape))
            if chunk.size != taken * math.prod(row_shape):
                raise ManifestError(f"{path} ends inside {tensor.name}", "export the model again")
            yield chunk.reshape((taken, *row_shape) if shape else ())


def array_chunks(values: np.ndarray, rows: int = 1) -> Iterator[np.ndarray]:
    """An array in chunks along axis 0, as `read_chunks` yields them."""
    if values.ndim == 0:
        yield values
        return
    step = _chunk_rows(values[:1].nbytes, rows)
    yield from (values[start:start + step] for start in range(0, len(values), step))


class StreamedGraph:
    """A graph held as its structure, whose initializers' values are read or made one tensor at a time when it is
    written, so that nothing ever holds all its weights.

    Initializers kept in the proto's own data (small graphs, small tensors) stay there; those in the source's side
    file are read from `directory`; those a pass replaced (`remake`, `replace`) come from the pass's `Chunks`,
    computed from the values before them (`source`). `save` writes each exactly once: a StreamedGraph is
    saved once.
    """

    def __init__(self, proto, directory: str | Path):
        self.proto = proto
        self.directory = Path(directory)
        self._made: dict[str, Chunks] = {}
        self._from_side_file: set[str] = set()  # written tensors that were read from a side file

    @classmethod
    def load(cls, path: str | Path, before_weights: Callable | None = None) -> StreamedGraph:
        """The graph at `path` without its side file's weights; `before_weights` as in `load_graph`."""
        return cls(load_graph(path, weights=False, before_weights=before_weights), Path(path).parent)

    def source(self, tensor) -> Chunks:
        """How to read `tensor`'s current values later, even after the proto's copy of it is changed or removed."""
        made = self._made.get(tensor.name)
        if made is not None:
            return made
        from onnx import TensorProto

        kept = TensorProto()
        kept.CopyFrom(tensor)  # for a tensor in the side file: its name, dtype, dims and place, no data
        return lambda rows: read_chunks(kept, self.directory, rows)

    def add(self, tensor, made: Chunks) -> None:
        """A new initializer (name, dtype, dims; no data), its values from `made`."""
        _point_at(tensor, "unwritten", 0, tensor_bytes(tensor))  # in no file yet, but a weight, not a constant
        self.proto.graph.initializer.append(tensor)
        self._made[tensor.name] = made

    def remake(self, tensor, made: Chunks) -> None:
        """`tensor` (its dtype and dims already those of what `made` yields) takes its values from `made`."""
        self._made[tensor.name] = made

    def replace(self, old, new: list[tuple[Any, Chunks]]) -> None:
        """Swaps initializer `old` for new ones, each a tensor (name, dtype, dims; no data) and what makes it."""
        self._made.pop(old.name, None)
        replace_initializer(self.proto.graph, old, [tensor for tensor, _ in new])
        self._made.update((tensor.name, made) for tensor, made in new)

    def stored_bytes(self) -> int:
        """The bytes the initializers will take once written."""
        from onnx.external_data_helper import uses_external_data

        return sum(tensor_bytes(t) if t.name in self._made else
                   _external_range(t, self.directory)[2] if uses_external_data(t) else t.ByteSize()
                   for t in self.proto.graph.initializer)

    def save(self, path: Path) -> None:
        """Writes and checks the graph laid out as `save_graph` lays it out (the same bytes): weights inline up to
        1 GiB, else in one side file. Either way one chunk of one tensor at a time: an inline graph is written and
        checked with a side file first, then its weights are spliced into the proto's bytes (`_inline_side_file`)."""
        inline = self.stored_bytes() <= EXTERNAL_DATA_THRESHOLD
        self.save_with_side_file(path)
        if inline:
            _inline_side_file(self.proto, Path(path), self._from_side_file)

    def save_with_side_file(self, path: Path) -> None:
        """Writes every initializer read or made into `<path>.data`, one tensor at a time, each on an ALIGNMENT
        boundary (those the proto holds itself stay inline), then the structure to `path`, and checks both."""
        from onnx.external_data_helper import uses_external_data

        path = Path(path)
        side = Path(f"{path}.data")
        if side.exists() and side.parent.resolve() == self.directory.resolve():
            raise InternalError(f"{side} may be where this graph's weights are read from; write elsewhere")
        _remove_stale(path)
        with open(side, "wb") as out:
            for tensor in self.proto.graph.initializer:
                chunks = self._stored_chunks(tensor)
                if chunks is None:
                    continue
                if uses_external_data(tensor):
                    self._from_side_file.add(tensor.name)
                out.write(b"\0" * (-out.tell() % ALIGNMENT))
                offset = out.tell()
                for chunk in chunks:
                    out.write(chunk)
                _point_at(tensor, side.name, offset, out.tell() - offset)
        _write_checked(self.proto, path)

    def loaded(self):
        """The proto with every weight inline (as `load_graph` returns it): for graphs that fit in memory."""
        for tensor in self.proto.graph.initializer:
            chunks = self._stored_chunks(tensor)
            if chunks is not None:
                data = b"".join(chunks)
                _clear_data(tensor)
                tensor.raw_data = data
        return self.proto

    def _stored_chunks(self, tensor) -> Iterator[bytes] | None:
        """The bytes `tensor` is stored as, chunk by chunk; None for one the proto holds itself."""
        from onnx.external_data_helper import uses_external_data

        made = self._made.pop(tensor.name, None)
        if made is not None:
            return _packed(tensor, made(1))
        if uses_external_data(tensor):
            return _raw_chunks(tensor, self.directory)
        return None


def _is_4bit(data_type: int) -> bool:
    """Whether ONNX stores two values of this dtype in a byte."""
    from onnx import TensorProto

    return data_type in (TensorProto.INT4, TensorProto.UINT4, TensorProto.FLOAT4E2M1)


def _chunk_rows(row_bytes: int, rows: int) -> int:
    """Rows per chunk: about CHUNK_BYTES, a multiple of `rows`."""
    return max(rows, CHUNK_BYTES // max(row_bytes, 1) // rows * rows)


def _external_range(tensor, directory: str | Path) -> tuple[Path, int, int]:
    """(file, offset, length) of a tensor stored in a side file, which must lie inside `directory`."""
    from onnx.external_data_helper import ExternalDataInfo

    info = ExternalDataInfo(tensor)
    directory = Path(directory).resolve()
    path = (directory / info.location).resolve()
    if not info.location or not path.is_relative_to(directory) or not path.is_file():
        raise ManifestError(f"{tensor.name}'s weights are in {info.location!r}, which is not a file beside its graph",
                            "export the model again, keeping each graph's .onnx.data file beside it")
    offset = info.offset or 0
    return path, offset, info.length if info.length is not None else path.stat().st_size - offset


def _raw_chunks(tensor, directory: str | Path) -> Iterator[bytes]:
    """The bytes of a tensor stored in a side file, CHUNK_BYTES at a time."""
    path, offset, length = _external_range(tensor, directory)
    with open(path, "rb") as data:
        data.seek(offset)
        for start in range(0, length, CHUNK_BYTES):
            chunk = data.read(min(CHUNK_BYTES, length - start))
            if not chunk:
                raise ManifestError(f"{path} ends inside {tensor.name}", "export the model again")
            yield chunk


def _packed(tensor, chunks: Iterable[np.ndarray]) -> Iterator[bytes]:
    """Value chunks as the bytes ONNX stores them (4-bit values two a byte: chunks must then hold an even count)."""
    from onnx import numpy_helper

    for chunk in chunks:
        if _is_4bit(tensor.data_type) and chunk.size % 2:
            raise InternalError(f"{tensor.name}: a chunk of {chunk.size} 4-bit values splits a byte")
        yield numpy_helper.from_array(np.ascontiguousarray(chunk)).raw_data


def tensor_bytes(tensor) -> int:
    """The bytes a tensor of its dtype and dims takes in raw_data."""
    from onnx import helper

    count = math.prod(tensor.dims)
    if _is_4bit(tensor.data_type):
        return (count + 1) // 2
    return count * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _clear_data(tensor) -> None:
    """Drops a tensor's values and where they were; a tensor read from a side file says DEFAULT, as
    onnx's load_external_data_for_tensor leaves it (so the written proto is the same bytes as before streaming)."""
    from onnx import TensorProto

    for field in _DATA_FIELDS:
        tensor.ClearField(field)
    if tensor.data_location == TensorProto.EXTERNAL:
        tensor.data_location = TensorProto.DEFAULT
    del tensor.external_data[:]


def _point_at(tensor, location: str, offset: int, length: int) -> None:
    """Makes `tensor` hold no data and refer to `length` bytes at `offset` of side file `location`."""
    from onnx import TensorProto

    _clear_data(tensor)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _inline_side_file(proto, path: Path, from_side_file: set[str]) -> None:
    """Rewrites the graph at `path` (`proto`, whose written weights are in `<path>.data`) with its weights inline,
    byte for byte what `onnx.save_model` writes for the proto holding them, copying each a chunk at a time; then
    removes the side file. Protobuf writes a message's fields in field-number order, so the bytes are the fields
    before the weights, each weight (its fields before raw_data, raw_data, the fields after), and the fields after.
    A weight read from a side file says DEFAULT where it was, as `attach_weights` leaves it; a made one says
    nothing."""
    from onnx import TensorProto
    from onnx.external_data_helper import uses_external_data

    side = Path(f"{path}.data")
    pieces: list = []  # bytes, a tensor the proto holds, or (offset, length) in the side file
    for tensor in proto.graph.initializer:
        if not uses_external_data(tensor):
            pieces += [_field_key(_INITIALIZER, tensor.ByteSize()), tensor]
            continue
        _, offset, length = _external_range(tensor, path.parent)
        inline = TensorProto()
        inline.CopyFrom(tensor)
        _clear_data(inline)
        if tensor.name not in from_side_file:
            inline.ClearField("data_location")
        before, after = _fields_around(inline, _RAW_DATA)
        key = _field_key(_RAW_DATA, length)
        pieces += [_field_key(_INITIALIZER, len(before) + len(key) + length + len(after)), before, key,
                   (offset, length), after]
    graph_before, graph_after = _fields_around(proto.graph, _INITIALIZER)
    graph_size = len(graph_before) + len(graph_after) + sum(
        p[1] if isinstance(p, tuple) else len(p) if isinstance(p, bytes) else p.ByteSize() for p in pieces)
    model_before, model_after = _fields_around(proto, _GRAPH)
    inlined = Path(f"{path}.inline")
    with open(side, "rb") as data, open(inlined, "wb") as out:
        out.write(model_before + _field_key(_GRAPH, graph_size) + graph_before)
        for piece in pieces:
            if isinstance(piece, tuple):
                data.seek(piece[0])
                for start in range(0, piece[1], CHUNK_BYTES):
                    out.write(data.read(min(CHUNK_BYTES, piece[1] - start)))
            else:
                out.write(piece if isinstance(piece, bytes) else piece.SerializeToString())
        out.write(graph_after + model_after)
    inlined.replace(path)
    side.unlink()


_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9  # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data


def _fields_around(message, number: int) -> tuple[bytes, bytes]:
    """The serialized fields of `message` numbered below `number`, and above it (copying only those)."""
    below, above = type(message)(), type(message)()
    for field, value in message.ListFields():
        if field.number == number:
            continue
        part = below if field.number < number else above
        if hasattr(value, "extend"):  # a repeated field
            getattr(part, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):  # a message
            getattr(part, field.name).CopyFrom(value)
        else:
            setattr(part, field.name, value)
    return below.SerializeToString(), above.SerializeToString()


def _field_key(number: int, length: int) -> bytes:
    """A length-delimited field's tag and length."""
    return _varint(number << 3 | 2) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _remove_stale(path: Path) -> None:
    for stale in (path, Path(f"{path}.data")):
        stale.unlink(missing_ok=True)


def _write_checked(proto, path: Path, **save_options) -> None:
    """Saves `proto` at `path`, then checks it and its shapes from the file (which works past 2 GiB)."""
    import onnx

    proto.producer_name = "janus-edge"
    onnx.save_model(proto, str(path), **save_options)
    onnx.checker.check_model(str(path), full_check=False)
    onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred")  # raises on inconsistent shapes
    Path(str(path) + ".inferred").unlink()
