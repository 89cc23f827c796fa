"""Open Inference Protocol tensors: a request's inputs into graph feeds, answers into output tensors.

JSON data and the binary tensor extension (tritonclient's default) both ways; every input is checked
(name, shape, datatype, size) before anything is served.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from contract.feeds import MISSING_CATEGORY, pack_columns
from contract.manifest import ColumnSpec, Manifest
from contract.outputs import Output
from service.errors import InvalidBody, InvalidField, PayloadTooLarge, describe

HEADER_LENGTH = "inference-header-content-length"
NUMERIC_TYPES = {
    "FP32": "<f4",
    "FP64": "<f8",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "INT8": "<i1",
    "INT16": "<i2",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}


def _split_body(body: bytes, headers: dict[str, str]) -> tuple[dict[str, Any], bytes]:
    raw_len = headers.get(HEADER_LENGTH)
    if raw_len is None:
        head, rest = body, b""
    else:
        try:
            n = int(raw_len)
        except ValueError as exc:
            raise InvalidField("Inference-Header-Content-Length", "an integer", describe(raw_len)) from exc
        if not 0 < n <= len(body):
            raise InvalidField("Inference-Header-Content-Length", f"1..{len(body)}", str(n))
        head, rest = body[:n], body[n:]
    try:
        parsed = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"body: malformed JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidBody(f"body: expected a JSON object, got {describe(parsed)}")
    return parsed, rest


def parameters_of(holder: dict[str, Any], field: str) -> dict[str, Any]:
    """A ``parameters`` object: absent or null is empty; anything else but an object is refused."""
    params = holder.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidField(f"{field}parameters", "an object", describe(params))
    return params


def _flag(params: dict[str, Any], name: str, field: str, default: bool) -> bool:
    value = params.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidField(f"{field}parameters.{name}", "true or false", describe(value))
    return value


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for d in data:
        out.extend(_flatten(d) if isinstance(d, list) else [d])
    return out


def _decode_bytes(raw: bytes, field: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise InvalidField(field, "length-prefixed BYTES elements", "a truncated element")
        (n,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + n > len(raw):
            raise InvalidField(field, "length-prefixed BYTES elements", "a truncated element")
        try:
            out.append(raw[i : i + n].decode())
        except UnicodeDecodeError as exc:
            raise InvalidField(field, "UTF-8 strings", "invalid UTF-8") from exc
        i += n
    return out


def _column_tensor(
    spec: ColumnSpec, inp: dict[str, Any], rows: int, binary: bytes | None, field: str
) -> npt.NDArray[Any]:
    dtype = inp.get("datatype")
    if spec.kind == "numeric":
        if dtype not in NUMERIC_TYPES:
            raise InvalidField(
                f"{field}.datatype", f"a numeric type ({', '.join(NUMERIC_TYPES)})", describe(dtype)
            )
        if binary is not None:
            element = np.dtype(NUMERIC_TYPES[dtype]).itemsize
            if len(binary) != rows * element:
                raise InvalidField(
                    f"{field}.parameters.binary_data_size",
                    f"{rows * element} bytes ({rows} x {dtype}, shape {inp.get('shape')})",
                    f"{len(binary)} bytes",
                )
            arr = np.frombuffer(binary, dtype=NUMERIC_TYPES[dtype])
        else:
            values = _flatten(inp.get("data"))
            for v in values:
                if type(v) not in (int, float) or not math.isfinite(v):
                    raise InvalidField(f"{field}.data", "finite numbers", describe(v))
            arr = np.asarray(values, dtype=np.float64)
        if arr.size != rows:
            raise InvalidField(f"{field}.data", f"{rows} elements (shape {inp.get('shape')})", f"{arr.size}")
        out = arr.astype(np.float32).reshape(rows, 1)
        if np.isinf(out).any():
            raise InvalidField(f"{field}.data", "finite numbers (NaN means missing)", "infinity")
        return out
    if dtype != "BYTES":
        raise InvalidField(f"{field}.datatype", f"BYTES (a {spec.kind} column)", describe(dtype))
    if binary is not None:
        strings: list[Any] = _decode_bytes(binary, f"{field}.data")
    else:
        strings = _flatten(inp.get("data"))
        for v in strings:
            if not isinstance(v, str):
                raise InvalidField(f"{field}.data", "strings", describe(v))
    if len(strings) != rows:
        raise InvalidField(f"{field}.data", f"{rows} elements (shape {inp.get('shape')})", f"{len(strings)}")
    text = np.empty((rows, 1), dtype=object)
    text[:, 0] = [s if s else MISSING_CATEGORY for s in strings]
    return text


def decode_request(
    manifest: Manifest, max_rows: int, body: bytes, headers: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Parse an infer request into (request JSON, feeds, rows): every input's name, shape, binary
    chunk and data checked in order, so the first error names its input (one pass, kept whole)."""
    request, rest = _split_body(body, headers)
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidField("inputs", "a non-empty list of tensors", describe(inputs))
    by_name = {c.name: c for c in manifest.inputs} | {c.tensor: c for c in manifest.inputs}
    seen: dict[str, tuple[ColumnSpec, dict[str, Any], str]] = {}
    rows: int | None = None
    offset = 0
    chunks: dict[str, bytes] = {}
    for i, inp in enumerate(inputs):
        field = f"inputs[{i}]"
        if not isinstance(inp, dict):
            raise InvalidField(field, "a tensor object", describe(inp))
        name = inp.get("name")
        spec = by_name.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidField(
                f"{field}.name", f"one of the {len(manifest.inputs)} input columns", describe(name)
            )
        if spec.name in seen:
            raise InvalidField(f"{field}.name", "each input once", f"{name!r} twice")
        shape = inp.get("shape")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(type(s) is int for s in shape)
            or (len(shape) == 2 and shape[1] != 1)
            or shape[0] < 1
        ):
            raise InvalidField(f"{field}.shape", "[N] or [N, 1] with N >= 1", describe(shape))
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidField(f"{field}.shape", f"{rows} rows like the other inputs", str(shape[0]))
        size = parameters_of(inp, f"{field}.").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(rest):
                raise InvalidField(
                    f"{field}.parameters.binary_data_size", "the size of its binary chunk", describe(size)
                )
            chunks[spec.name] = rest[offset : offset + size]
            offset += size
        elif "data" not in inp:
            raise InvalidField(f"{field}.data", "tensor data (or parameters.binary_data_size)", "no field")
        seen[spec.name] = (spec, inp, field)
    missing = [c.name for c in manifest.inputs if c.name not in seen]
    if missing:
        raise InvalidField(
            "inputs", f"a tensor for every input column (missing {missing[0]!r})", f"{len(seen)} inputs"
        )
    if offset != len(rest):
        raise InvalidBody(f"body: {len(rest) - offset} bytes of binary data not claimed by any input")
    assert rows is not None
    if rows > max_rows:
        raise PayloadTooLarge(f"inputs: expected at most {max_rows} rows, got {rows}")
    tensors = {
        spec.tensor: _column_tensor(spec, inp, rows, chunks.get(spec.name), field)
        for spec, inp, field in seen.values()
    }
    return request, pack_columns(manifest.inputs, tensors), rows


def _encode_bytes(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (v.encode() for v in values))


def output_names(manifest: Manifest) -> list[str]:
    """The output tensors of every model of this repository."""
    return ["value"] if manifest.task == "regression" else ["label", "label_index", "probabilities"]


def requested_outputs(request: dict[str, Any], manifest: Manifest) -> list[tuple[str, bool]]:
    """(output name, as binary) for each output asked for (all by default), checked before serving."""
    binary_default = _flag(parameters_of(request, ""), "binary_data_output", "", False)
    names = output_names(manifest)
    wanted = request.get("outputs")
    if wanted is None:
        return [(n, binary_default) for n in names]
    if not isinstance(wanted, list):
        raise InvalidField("outputs", "a list of requested outputs", describe(wanted))
    selected: list[tuple[str, bool]] = []
    for i, o in enumerate(wanted):
        name = o.get("name") if isinstance(o, dict) else None
        if name not in names:
            raise InvalidField(f"outputs[{i}].name", f"one of {', '.join(names)}", describe(name))
        oparams = parameters_of(o, f"outputs[{i}].")
        selected.append((name, _flag(oparams, "binary_data", f"outputs[{i}].", binary_default)))
    return selected


def encode_outputs(
    manifest: Manifest, out: Output, rows: int, selected: list[tuple[str, bool]]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """(output tensor descriptions, binary chunks in order) of an answer."""
    tensors: dict[str, tuple[str, list[int], Any]] = {}
    if manifest.task == "regression":
        assert out.values is not None
        tensors["value"] = ("FP32", [rows], out.values.astype(np.float32))
    else:
        assert out.labels is not None and out.proba is not None
        classes = manifest.classes
        tensors["label"] = ("BYTES", [rows], [str(classes[int(i)]) for i in out.labels])
        tensors["label_index"] = ("INT64", [rows], out.labels.astype(np.int64))
        tensors["probabilities"] = ("FP32", [rows, len(classes)], out.proba.astype(np.float32))
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in selected:
        dtype, shape, data = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": dtype, "shape": shape}
        if binary:
            blob = _encode_bytes(data) if dtype == "BYTES" else np.ascontiguousarray(data).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data if dtype == "BYTES" else np.asarray(data).reshape(-1).tolist()
        outputs.append(entry)
    return outputs, blobs
