"""A minimal MLServer runtime serving one ONNX graph with onnxruntime (the strongest one-model peer).

Requests are Open Inference Protocol v2 with one input per graph input (the gateway's ONNX members take
one [N, k] float tensor named "numeric" for the numeric columns, plus one [N, 1] input per categorical
column); the answer carries the graph's `label` and `probabilities` outputs.
MLServer imports it as `ort_model.OnnxRuntimeModel` (benchmarks/run.py puts this folder on PYTHONPATH).
Loaded only inside the MLServer virtualenv (benchmarks/.envs/mlserver), never by the gateway.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):
    """One onnxruntime session, one intra-op thread (as the gateway and the floor use)."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=["model.onnx"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(uri, sess_options=opts, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {}
        for item in payload.inputs:
            arr = NumpyCodec.decode_input(item)
            feeds[item.name] = (arr.reshape(-1, 1) if arr.ndim == 1 else arr).astype(np.float32, copy=False)
        results = self._session.run(None, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(n, np.asarray(r))
                for n, r in zip(self._outputs, results, strict=True)
            ],
        )
