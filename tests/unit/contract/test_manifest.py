"""The repository contract: what a valid manifest is, and the message each broken one gets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contract.manifest import EnsembleSpec, Manifest, ModelCard, Routing
from tests.helpers import FINGERPRINT


def _ensemble(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in data["ensembles"] if e["name"] == name)


def test_valid_manifest_parses_and_round_trips(manifest_dict: dict[str, Any]) -> None:
    manifest = Manifest.model_validate(manifest_dict)
    assert manifest.variant_names() == ["logreg", "tree", "knn", "vote", "weighted", "stack"]
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


def test_weights_members_mismatch_names_both_counts(manifest_dict: dict[str, Any]) -> None:
    _ensemble(manifest_dict, "weighted")["weights"] = [0.5, 0.5]
    with pytest.raises(ValidationError, match=r"ensemble 'weighted': expected 3 weights, got 2"):
        Manifest.model_validate(manifest_dict)


def test_weights_must_be_non_negative_with_positive_sum(manifest_dict: dict[str, Any]) -> None:
    _ensemble(manifest_dict, "weighted")["weights"] = [1.0, -0.5, 0.5]
    with pytest.raises(ValidationError, match=r"weights must be >= 0 with a positive sum"):
        Manifest.model_validate(manifest_dict)
    _ensemble(manifest_dict, "weighted")["weights"] = [0.0, 0.0, 0.0]
    with pytest.raises(ValidationError, match=r"weights must be >= 0 with a positive sum"):
        Manifest.model_validate(manifest_dict)


def test_unknown_routed_variant_is_named(manifest_dict: dict[str, Any]) -> None:
    manifest_dict["routing"]["shadow"].append("ghost")
    with pytest.raises(ValidationError, match=r"routing names unknown variants \['ghost'\]"):
        Manifest.model_validate(manifest_dict)


def test_unknown_champion_is_named(manifest_dict: dict[str, Any]) -> None:
    manifest_dict["routing"]["champion"] = "mlp"
    with pytest.raises(ValidationError, match=r"unknown variants \['mlp'\]; known: \['knn', "):
        Manifest.model_validate(manifest_dict)


def test_duplicate_model_names_across_members_and_ensembles(manifest_dict: dict[str, Any]) -> None:
    _ensemble(manifest_dict, "vote")["name"] = "tree"
    with pytest.raises(ValidationError, match=r"duplicate model names: \['tree'\]"):
        Manifest.model_validate(manifest_dict)


def test_duplicate_members_in_an_ensemble(manifest_dict: dict[str, Any]) -> None:
    _ensemble(manifest_dict, "vote")["members"] = ["logreg", "tree", "tree"]
    with pytest.raises(ValidationError, match=r"ensemble 'vote': duplicate members"):
        Manifest.model_validate(manifest_dict)


def test_ensemble_of_unknown_member(manifest_dict: dict[str, Any]) -> None:
    _ensemble(manifest_dict, "vote")["members"] = ["logreg", "svm"]
    with pytest.raises(ValidationError, match=r"ensemble 'vote': unknown members \['svm'\]"):
        Manifest.model_validate(manifest_dict)


def test_ensemble_needs_two_members(manifest_dict: dict[str, Any]) -> None:
    _ensemble(manifest_dict, "vote")["members"] = ["logreg"]
    with pytest.raises(ValidationError, match=r"expected at least 2 members, got 1"):
        Manifest.model_validate(manifest_dict)


@pytest.mark.parametrize(
    ("strategy", "meta_model", "meta_sha256", "message"),
    [
        ("stack", None, None, "a meta_model is required for, and only for, stack"),
        ("soft_average", "ensembles/x/meta.onnx", "1" * 64, "a meta_model is required for, and only for"),
        ("stack", "ensembles/x/meta.onnx", None, "meta_model needs meta_sha256"),
    ],
)
def test_meta_model_only_and_always_for_stacking(
    strategy: str, meta_model: str | None, meta_sha256: str | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        EnsembleSpec(
            name="x",
            strategy=strategy,
            members=["a", "b"],
            meta_model=meta_model,
            meta_sha256=meta_sha256,
            card="ensembles/x/card.json",
        )


def test_classification_needs_two_classes(manifest_dict: dict[str, Any]) -> None:
    manifest_dict["classes"] = ["yes"]
    with pytest.raises(ValidationError, match=r"task 'binary': expected at least 2 classes, got 1"):
        Manifest.model_validate(manifest_dict)


def test_regression_needs_no_classes(manifest_dict: dict[str, Any]) -> None:
    manifest_dict.update(task="regression", classes=[], ensembles=[])
    manifest_dict["routing"]["shadow"] = ["tree", "knn"]
    assert Manifest.model_validate(manifest_dict).task == "regression"


def test_format_1_repositories_are_refused_with_a_rebuild_hint(manifest_dict: dict[str, Any]) -> None:
    manifest_dict["format_version"] = 1
    with pytest.raises(ValidationError, match=r"format_version 1 .* rebuild the repository"):
        Manifest.model_validate(manifest_dict)


def test_numeric_columns_come_first_and_no_column_takes_the_numeric_input_name(
    manifest_dict: dict[str, Any],
) -> None:
    numeric = {"name": "a", "tensor": "a", "kind": "numeric"}
    text = {"name": "b", "tensor": "b", "kind": "categorical", "categories": ["x"]}
    manifest_dict["inputs"] = [numeric, text]
    assert Manifest.model_validate(manifest_dict).onnx_inputs() == {
        "numeric": ("numeric", 1),
        "b": ("categorical", 1),
    }
    manifest_dict["inputs"] = [text, numeric]
    with pytest.raises(
        ValidationError, match=r"numeric columns must come before string \(categorical, text\) ones"
    ):
        Manifest.model_validate(manifest_dict)
    manifest_dict["inputs"] = [numeric, {**text, "tensor": "numeric"}]
    with pytest.raises(ValidationError, match=r"must be unique and not 'numeric'"):
        Manifest.model_validate(manifest_dict)


def test_manifest_needs_an_input(manifest_dict: dict[str, Any]) -> None:
    manifest_dict["inputs"] = []
    with pytest.raises(ValidationError, match=r"inputs: expected at least one column"):
        Manifest.model_validate(manifest_dict)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("members", 0, "sha256"), "not-a-sha"),
        (("members", 0, "name"), "has space"),
        (("inputs", 0, "tensor"), "9starts_with_digit"),
        (("format_version",), 3),
        (("task",), "ranking"),
    ],
)
def test_field_constraints(manifest_dict: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    target: Any = manifest_dict
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        Manifest.model_validate(manifest_dict)


def test_unknown_fields_are_rejected(manifest_dict: dict[str, Any]) -> None:
    manifest_dict["members"][0]["weight"] = 1.0
    with pytest.raises(ValidationError, match=r"Extra inputs are not permitted"):
        Manifest.model_validate(manifest_dict)


def test_manifest_is_frozen(manifest_dict: dict[str, Any]) -> None:
    manifest = Manifest.model_validate(manifest_dict)
    with pytest.raises(ValidationError):
        manifest.version = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"champion": "a", "challengers": {"b": 0.6, "c": 0.4}}, "must sum to less than 1"),
        ({"champion": "a", "challengers": {"a": 0.1}}, "champion 'a' cannot also be a challenger"),
        ({"champion": "a", "challengers": {"b": 0.0}}, "greater than 0"),
        ({"champion": "a", "shadow_fraction": 1.5}, "less than or equal to 1"),
    ],
)
def test_routing_rules(routing: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Routing.model_validate(routing)


def test_model_card_round_trips_through_json() -> None:
    card = ModelCard.model_validate(
        {
            "name": "vote",
            "kind": "ensemble",
            "family": "hard_vote",
            "primary_metric": "accuracy",
            "metrics": {"test": {"accuracy": 0.9}},
            "dataset": FINGERPRINT,
            "members": ["a", "b", "c"],
            "strategy": "hard_vote",
            "decision_threshold": 0.35,
        }
    )
    assert ModelCard.model_validate_json(card.model_dump_json()) == card
    with pytest.raises(ValidationError):
        ModelCard.model_validate({**card.model_dump(), "strategy": "median"})
