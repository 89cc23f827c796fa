"""k-means cluster distances as features for a downstream model (a classic combination: the distances
to k centres are smooth radial features a linear model cannot make itself), with its ONNX converter.

`ClusterFeatures` passes its input through and appends each row's Euclidean distance to every centre;
in the graph that is onnxruntime's CDist contrib operator (as the kNN graphs use) and a Concat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans


class ClusterFeatures(TransformerMixin, BaseEstimator):
    """The rows beside their distances to ``n_clusters`` k-means centres fitted on them."""

    def __init__(self, n_clusters: int = 8, random_state: int = 0) -> None:
        self.n_clusters = n_clusters
        self.random_state = random_state

    def fit(self, x: Any, y: Any = None) -> ClusterFeatures:
        rows = np.asarray(x, dtype=np.float64)
        self.kmeans_ = KMeans(
            n_clusters=min(self.n_clusters, len(rows)), n_init=3, random_state=self.random_state
        ).fit(rows)
        self.n_features_in_ = rows.shape[1]
        return self

    def transform(self, x: Any) -> npt.NDArray[np.float64]:
        rows = np.asarray(x, dtype=np.float64)
        centres = self.kmeans_.cluster_centers_
        distances = np.sqrt(np.maximum(((rows[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), 0.0))
        return np.hstack([rows, distances])


def _shape(operator: Any) -> None:
    model: ClusterFeatures = operator.raw_operator
    rows = operator.inputs[0].get_first_dimension()
    width = model.n_features_in_ + len(model.kmeans_.cluster_centers_)
    operator.outputs[0].type = FloatTensorType([rows, width])


def _convert(scope: Any, operator: Any, container: Any) -> None:
    model: ClusterFeatures = operator.raw_operator
    centres = np.asarray(model.kmeans_.cluster_centers_, dtype=np.float32)
    name = scope.get_unique_variable_name("centres")
    container.add_initializer(name, onnx.TensorProto.FLOAT, list(centres.shape), centres.ravel().tolist())
    x = operator.inputs[0].full_name
    distances = scope.get_unique_variable_name("distances")
    container.add_node(
        "CDist",
        [x, name],
        distances,
        name=scope.get_unique_operator_name("CDist"),
        op_domain="com.microsoft",
        op_version=1,
        metric="euclidean",
    )
    container.add_node(
        "Concat",
        [x, distances],
        operator.outputs[0].full_name,
        name=scope.get_unique_operator_name("Concat"),
        axis=1,
    )


update_registered_converter(ClusterFeatures, "GatewayClusterFeatures", _shape, _convert)
