"""Merging every member into one ONNX graph over the shared raw-column inputs.

Each onnxruntime run has a fixed cost per call and per input tensor; with one [N, 1] input per
column, running nine members separately pays it nine times. The merged graph takes the inputs once
and yields every member's outputs as ``<member>::<output>``. Members are first upgraded to one opset
(the default domain), and every internal name is prefixed by its member so nothing collides.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import compose, helper, version_converter

SEPARATOR = "::"


def output_name(member: str, output: str) -> str:
    """The merged graph's name for one member output."""
    return f"{member}{SEPARATOR}{output}"


def _opset(model: onnx.ModelProto, domain: str) -> int:
    return max((o.version for o in model.opset_import if o.domain == domain), default=0)


def merge(members: Mapping[str, onnx.ModelProto]) -> onnx.ModelProto:
    """One graph computing every member; inputs must be identical (the manifest's columns)."""
    if not members:
        raise ValueError("expected at least one member to merge")
    default = max(_opset(m, "") or _opset(m, "ai.onnx") for m in members.values())
    upgraded: dict[str, onnx.ModelProto] = {}
    for name, model in members.items():
        current = _opset(model, "") or _opset(model, "ai.onnx")
        upgraded[name] = version_converter.convert_version(model, default) if current != default else model
    first = next(iter(upgraded.values()))
    inputs = list(first.graph.input)
    signature = [(i.name, i.type.SerializeToString()) for i in inputs]
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    value_info: list[onnx.ValueInfoProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    domains: dict[str, int] = {}
    for index, (name, model) in enumerate(upgraded.items()):
        got = [(i.name, i.type.SerializeToString()) for i in model.graph.input]
        if got != signature:
            raise ValueError(f"member {name!r}: inputs differ from the other members'")
        prefixed = compose.add_prefix(model, prefix=f"m{index}_", rename_inputs=False, rename_outputs=False)
        graph = prefixed.graph
        renames = {o.name: output_name(name, o.name) for o in graph.output}
        for node in graph.node:
            node.output[:] = [renames.get(x, x) for x in node.output]
            node.input[:] = [renames.get(x, x) for x in node.input]
        nodes.extend(graph.node)
        initializers.extend(graph.initializer)
        value_info.extend(graph.value_info)
        for o in graph.output:
            out = onnx.ValueInfoProto()
            out.CopyFrom(o)
            out.name = renames[o.name]
            outputs.append(out)
        for op in model.opset_import:
            key = op.domain or ""
            domains[key] = max(domains.get(key, 0), op.version)
    graph = helper.make_graph(
        nodes, "ensemble_gateway_members", inputs, outputs, initializers, value_info=value_info
    )
    merged = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(domains.items())],
        producer_name="ensemble-gateway",
    )
    merged.ir_version = max(m.ir_version for m in upgraded.values())
    onnx.checker.check_model(merged)
    return merged
