"""The floor: a bare Starlette + uvicorn (uvloop + httptools) app doing the gateway's onnxruntime work
and nothing else (no validation messages, routing, request ids, ledger, metrics or BentoML).

POST /predict takes the gateway's body, {"records": [{column: value}]}, builds the same feeds the
gateway builds (one [N, k] "numeric" input, one [N, 1] input per categorical column), runs the configured ONNX graph(s) once each and, for several,
combines them as the champion ensemble does (soft average, hard vote or stacking meta-graph);
GET /healthz answers once the sessions are loaded.

    python benchmarks/floor_app.py --config floor.json --port 8000

The config (written by benchmarks/run.py from the repository manifest):
    {"columns": [{"name": ..., "tensor": ..., "kind": "numeric"|"categorical"}], "classes": [...],
     "models": [{"path": "model.onnx", "weight": 1.0}], "strategy": "soft_average"|"hard_vote"|"stack",
     "meta": "meta.onnx" (stack only)}

Classification only (the benchmark repository is breast_cancer); decision thresholds are not applied.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def session(path: str) -> ort.InferenceSession:
    """One intra-op thread, like the gateway (single rows are fastest without thread hand-offs)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def build_app(config: dict[str, Any]) -> Starlette:
    numeric = [c["name"] for c in config["columns"] if c["kind"] == "numeric"]
    text = [(c["name"], c["tensor"]) for c in config["columns"] if c["kind"] != "numeric"]
    sessions = [session(m["path"]) for m in config["models"]]
    weights = np.asarray([m.get("weight", 1.0) for m in config["models"]], dtype=np.float64)
    strategy = config.get("strategy", "soft_average")
    meta = session(config["meta"]) if strategy == "stack" else None
    classes = config["classes"]
    class_keys = [str(c) for c in classes]

    def feeds_of(records: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(records)
        feeds: dict[str, Any] = {}
        if numeric:
            arr = np.array([[rec[name] for name in numeric] for rec in records], dtype=np.float64)
            feeds["numeric"] = arr.astype(np.float32)
        for name, tensor in text:
            col = np.empty((n, 1), dtype=object)
            col[:, 0] = ["" if rec[name] is None else rec[name] for rec in records]
            feeds[tensor] = col
        return feeds

    def combine(feeds: dict[str, Any]) -> np.ndarray:
        """Probabilities (rows, classes): one graph, or the champion ensemble's combiner."""
        outs = [s.run(None, feeds) for s in sessions]
        if len(outs) == 1:
            return np.asarray(outs[0][1], dtype=np.float64)
        if strategy == "hard_vote":
            labels = np.asarray([np.asarray(o[0]).reshape(-1) for o in outs], dtype=np.int64)
            counts = np.zeros((labels.shape[1], len(classes)))
            for member_labels, w in zip(labels, weights, strict=True):
                np.add.at(counts, (np.arange(labels.shape[1]), member_labels), w)
            return counts / weights.sum()
        proba = np.asarray([o[1] for o in outs], dtype=np.float64)
        if meta is not None:
            feats = proba[:, :, 1:] if len(classes) == 2 else proba
            x = np.ascontiguousarray(np.concatenate(list(feats), axis=1), dtype=np.float32)
            return np.asarray(meta.run(None, {"features": x})[1], dtype=np.float64)
        return np.average(proba, axis=0, weights=weights)

    async def predict(request: Request) -> Response:
        body = orjson.loads(await request.body())
        p = combine(feeds_of(body["records"]))
        labels = np.argmax(p, axis=1)
        out = {
            "predictions": [
                {
                    "label": classes[int(i)],
                    "probabilities": dict(zip(class_keys, map(float, row), strict=True)),
                }
                for i, row in zip(labels, p, strict=True)
            ]
        }
        return Response(orjson.dumps(out), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = build_app(json.loads(args.config.read_text()))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
