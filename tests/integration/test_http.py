"""The JSON and admin API in-process: answers, online == offline combiners, routing, bad input."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import numpy as np
import pytest

from service.core.gateway import Gateway
from service.recording.jobs import Finished
from service.settings import Settings
from tests.helpers import ADMIN_TOKEN, BuiltRepo, HeldOut, ledger_count

AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_predict_answers_with_champion_and_request_id(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    r = client.post("/predict", json={"records": feature_records[:3]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["variant"] == gateway.router.champion
    assert body["role"] == "champion"
    assert r.headers["x-request-id"] == body["request_id"]
    assert len(body["predictions"]) == 3
    classes = [str(c) for c in gateway.repo.manifest.classes]
    for row in body["predictions"]:
        assert row["label"] in gateway.repo.manifest.classes
        assert set(row["probabilities"]) == set(classes)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_client_request_id_from_body_or_header(client: Any, feature_records: list[dict[str, Any]]) -> None:
    r = client.post("/predict", json={"records": feature_records[:1], "request_id": "abc-1"})
    assert r.json()["request_id"] == "abc-1"
    r = client.post("/predict", json={"records": feature_records[:1]}, headers={"x-request-id": "hdr-7"})
    assert r.json()["request_id"] == "hdr-7" and r.headers["x-request-id"] == "hdr-7"


def test_every_variant_can_be_forced_and_members_returned(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    for name in [*gateway.repo.variants, "champion"]:
        r = client.post(
            "/predict", json={"records": feature_records[:2], "variant": name, "return_members": True}
        )
        assert r.status_code == 200, (name, r.text)
        body = r.json()
        assert body["role"] == "forced"
        assert set(body["members"]) == {m.name for m in gateway.repo.manifest.members}


def test_online_combiners_equal_offline_evaluation(client: Any, gateway: Gateway, held_out: HeldOut) -> None:
    """Every variant served online scores exactly the test metrics the builders wrote in its card."""
    records, y_test = held_out.records, held_out.classes
    classes = gateway.repo.manifest.classes
    for name, card in gateway.repo.cards.items():
        answers: list[dict[str, Any]] = []
        for start in range(0, len(records), 50):
            r = client.post("/predict", json={"records": records[start : start + 50], "variant": name})
            assert r.status_code == 200, r.text
            answers += r.json()["predictions"]
        labels = np.array([classes.index(p["label"]) for p in answers])
        online = float(np.mean(labels == y_test))
        assert online == pytest.approx(card.metrics["test"]["accuracy"], abs=1e-6), name


def test_ensembles_recombine_member_outputs_exactly(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    """Hand-computed vote and averages from the returned member outputs match the served ensembles."""
    recs = feature_records[:40]
    classes = [str(c) for c in gateway.repo.manifest.classes]
    members = client.post(
        "/predict", json={"records": recs, "variant": "vote", "return_members": True}
    ).json()
    for ens in gateway.repo.manifest.ensembles:
        if ens.strategy not in ("hard_vote", "soft_average"):
            continue
        served = client.post("/predict", json={"records": recs, "variant": ens.name}).json()["predictions"]
        w = np.asarray(ens.weights or [1.0] * len(ens.members))
        proba = np.array(
            [
                [[m["probabilities"][c] for c in classes] for m in members["members"][name]]
                for name in ens.members
            ]
        )
        if ens.strategy == "soft_average":
            expected = np.average(proba, axis=0, weights=w)
            got = np.array([[p["probabilities"][c] for c in classes] for p in served])
            np.testing.assert_allclose(got, expected, atol=1e-6)
        else:
            # Votes count each member's own argmax label (the graph's label, no threshold).
            votes = proba.argmax(axis=2)
            counts = np.stack([np.bincount(v, weights=w, minlength=len(classes)) for v in votes.T])
            expected_labels = counts.argmax(axis=1)
            got_labels = [classes.index(str(p["label"])) for p in served]
            assert got_labels == expected_labels.tolist()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{", 400, "malformed JSON"),
        (b'{"records": [{"age": NaN}]}', 400, "malformed JSON"),
        (b"[]", 400, "expected a JSON object"),
        (b"", 400, "empty body"),
        (b'{"records": []}', 400, "records: expected at least one record"),
        (b'{"records": {}}', 400, "records: expected a list"),
        (b'{"records": [5]}', 400, "records[0]: expected an object"),
        (b'{"rows": []}', 400, "rows: expected one of"),
        (b'{"records": [{"age": 1}]}', 400, "expected a value (null if missing)"),
        (b'{"records": [{"age": 1, "monthly income": 2, "city": "a", "plan": "b", "zzz": 1}]}', 400, "zzz"),
        (
            b'{"records": [{"age": "old", "monthly income": 2, "city": "a", "plan": "b"}]}',
            400,
            "records[0].age: expected a number or null, got string",
        ),
        (
            b'{"records": [{"age": true, "monthly income": 2, "city": "a", "plan": "b"}]}',
            400,
            "records[0].age: expected a number or null, got boolean",
        ),
        (b'{"records": [{"age": 1e999, "monthly income": 2, "city": "a", "plan": "b"}]}', 400, "infinity"),
        (
            b'{"records": [{"age": 1e300, "monthly income": 2, "city": "a", "plan": "b"}]}',
            400,
            "records[0].age: expected a finite number (float32 range) or null, got number 1e+300",
        ),
        (
            b'{"records": [{"age": 1, "monthly income": 2, "city": 3, "plan": "b"}]}',
            400,
            "records[0].city: expected a string or null",
        ),
        (
            b'{"records": [{"age": 1, "monthly income": 2, "city": "a", "plan": "b"}], "variant": "nope"}',
            400,
            "unknown variant 'nope'",
        ),
        (
            b'{"records": [{"age": 1, "monthly income": 2, "city": "a", "plan": "b"}], "request_id": "a b"}',
            400,
            "request_id",
        ),
        (
            b'{"records": [{"age": 1, "monthly income": 2, "city": "a", "plan": "b"}], "return_members": 1}',
            400,
            "return_members",
        ),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client: Any, body: bytes, status: int, fragment: str) -> None:
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


def test_limits_and_service_keeps_serving(client: Any, feature_records: list[dict[str, Any]]) -> None:
    r = client.post("/predict", json={"records": feature_records[:65]})
    assert r.status_code == 413 and "at most 64 records" in r.json()["error"]
    r = client.post(
        "/predict",
        content=b'{"records": [' + b" " * 70_000 + b"]}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and "body" in r.json()["error"]
    r = client.post("/predict", json={"records": [{**feature_records[0], "age": None, "city": None}]})
    assert r.status_code == 200, "missing values are accepted and imputed inside the graph"
    r = client.post("/predict", json={"records": [{**feature_records[0], "city": "atlantis"}]})
    assert r.status_code == 200, "unknown categories are ignored by the one-hot encoder"


def test_admin_requires_token(client: Any) -> None:
    assert client.get("/admin/routing").status_code == 401
    assert client.get("/admin/routing", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/admin/routing", headers=AUTH).status_code == 200


def test_admin_disabled_without_token(built_repo: BuiltRepo) -> None:
    from starlette.testclient import TestClient

    from service.http.app import build_app

    gw = Gateway(Settings(repository=built_repo.root, ledger_enabled=False))
    gw.load()
    try:
        with TestClient(build_app(gw)) as c:
            r = c.post("/admin/reload", headers=AUTH)
            assert r.status_code == 403 and "GATEWAY_ADMIN_TOKEN" in r.json()["error"]
    finally:
        gw.close()


def test_ab_routing_is_sticky_and_weighted(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    champion = gateway.router.champion
    challenger = next(n for n in gateway.repo.variants if n != champion)
    r = client.put(
        "/admin/routing",
        headers=AUTH,
        json={"champion": champion, "challengers": {challenger: 0.3}, "shadow": []},
    )
    assert r.status_code == 200, r.text
    seen: Counter[str] = Counter()
    for i in range(300):
        key = f"user-{i}"
        first = client.post("/predict", json={"records": feature_records[:1], "routing_key": key}).json()
        again = client.post("/predict", json={"records": feature_records[:1], "routing_key": key}).json()
        assert first["variant"] == again["variant"], "same routing key, same variant"
        seen[first["role"]] += 1
    assert 60 <= seen["challenger"] <= 120, seen  # 30% of 300, well inside binomial noise


def test_admin_routing_rejects_unknown_names_and_bad_weights(client: Any) -> None:
    r = client.put("/admin/routing", headers=AUTH, json={"champion": "ghost"})
    assert r.status_code == 400 and "ghost" in r.json()["error"]
    r = client.put("/admin/routing", headers=AUTH, json={"champion": "vote", "challengers": {"stack": 1.5}})
    assert r.status_code == 400 and "challengers" in r.json()["error"]


def test_shadow_runs_every_variant_off_the_request_path(
    settings: Settings, feature_records: list[dict[str, Any]]
) -> None:
    results: list[Finished] = []
    # A recorder watches shadow work done on a thread of this process (what the evaluator process
    # does is checked through what it records: tests/integration/test_shadow_records.py).
    gateway = Gateway(settings.model_copy(update={"evaluator_process": False}), recorder=results.append)
    gateway.load()
    _out, served = gateway.predict_json({"records": feature_records[:4]}, None)
    assert gateway.recording.barrier(10)
    gateway.close()
    assert len(results) == 1
    everything = set(gateway.repo.variants)
    assert set(results[0].variants) == everything
    assert set(served.members) == set(gateway.repo.members_for([served.variant])), (
        "only needed members inline"
    )


def test_reload_swaps_atomically_under_load(
    client: Any, gateway: Gateway, built_repo: BuiltRepo, feature_records: list[dict[str, Any]]
) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            statuses.append(client.post("/predict", json={"records": feature_records[:2]}).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(3):
        r = client.post(
            "/admin/reload", headers=AUTH, json={"repository": f"churn/{built_repo.version.name}"}
        )
        assert r.status_code == 200, r.text
    stop.set()
    for t in threads:
        t.join()
    assert statuses and set(statuses) == {200}


@pytest.mark.parametrize("value", ["/etc", "../..", "churn/../../x", "churn/1/../..", "nope", "999"])
def test_reload_takes_names_under_the_models_root_only(client: Any, gateway: Gateway, value: str) -> None:
    r = client.post("/admin/reload", headers=AUTH, json={"repository": value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error.startswith("repository: expected a model name, name/version or version")
    assert str(gateway.settings.repository.resolve()) not in error  # no host paths in errors


def test_reload_by_version_and_name(client: Any, built_repo: BuiltRepo) -> None:
    version = built_repo.version.name
    for value in (version, "churn", f"churn/{version}"):
        r = client.post("/admin/reload", headers=AUTH, json={"repository": value})
        assert r.status_code == 200 and r.json()["version"] == int(version), r.text


def test_models_lists_members_ensembles_cards_routing(client: Any, gateway: Gateway) -> None:
    body = client.get("/models").json()
    assert {m["name"] for m in body["members"]} == {m.name for m in gateway.repo.manifest.members}
    assert {e["name"] for e in body["ensembles"]} == {"vote", "average", "weighted", "stack"}
    assert body["routing"]["champion"] == gateway.router.champion
    assert all(m["card"]["parity"]["passed"] for m in body["members"])
    assert any(e["card"]["decision_threshold"] is not None for e in body["ensembles"])
    assert {c["name"] for c in body["inputs"]} == {"age", "monthly income", "city", "plan"}


def test_batched_shadow_equals_per_request_evaluation(
    gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    """Shadow jobs of many requests share member runs; every request still gets its own exact answers."""
    from dataclasses import replace

    from service.core.requests import make_request, records_to_feeds
    from service.core.routing import Router
    from service.recording.finisher import Finisher

    repo = gateway.repo
    quiet = Router(champion=gateway.router.champion, challengers=(), shadow=(), shadow_fraction=0.0)
    others = tuple(n for n in repo.variants if n != quiet.champion)
    jobs = []
    for i in range(12):
        records = feature_records[i * 2 : i * 2 + 1 + i % 2]  # 1 or 2 rows per request
        feeds = records_to_feeds(repo.manifest, records, 64)
        request = make_request(feeds, len(records), body_id=f"b-{i}", header_id=None)
        answered = gateway.answer(repo, quiet, request)
        jobs.append(replace(answered, feeds=feeds, shadow=others))
    results: list[Finished] = []
    versions = {str(repo.path): repo}
    Finisher(lambda: gateway.series, lambda: None, versions.__getitem__, lambda: results.append).finish(jobs)
    assert [r.job.request_id for r in results] == [f"b-{i}" for i in range(12)]
    for job, result in zip(jobs, results, strict=True):
        alone = repo.run_members(job.feeds, [m.name for m in repo.manifest.members])
        for name in others:
            expected = alone[name] if name in alone else repo.evaluate(name, alone)
            got = result.variants[name]
            assert got.labels is not None and expected.labels is not None
            np.testing.assert_array_equal(got.labels, expected.labels)
            np.testing.assert_allclose(got.proba, expected.proba, rtol=0, atol=1e-6)


def test_openapi_documents_the_json_api(client: Any, feature_records: list[dict[str, Any]]) -> None:
    from service.http.openapi import FeedbackRequest, PredictRequest, PredictResponse

    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert {"/predict", "/feedback", "/compare", "/models"} <= set(doc["paths"])
    record = doc["components"]["schemas"]["Record"]
    assert set(record["required"]) == {"age", "monthly income", "city", "plan"}
    # The documented shapes are the served shapes.
    body = PredictRequest(records=feature_records[:2], request_id="doc-1", return_members=True)
    r = client.post("/predict", json=body.model_dump(exclude_none=True))
    assert r.status_code == 200
    PredictResponse.model_validate(r.json())
    fb = FeedbackRequest.model_validate({"labels": [{"request_id": "doc-1", "row": 0, "label": "stay"}]})
    assert client.post("/feedback", json=fb.model_dump()).json()["joined"] == 1


def test_hot_routes_answer_wrong_methods_and_odd_paths_like_the_rest_of_the_api(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    r = client.get("/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert "expected POST, got GET" in r.json()["error"]
    name = gateway.repo.manifest.name
    r = client.get(f"/v2/models/{name}/infer")
    assert r.status_code == 405
    # Paths shaped unlike an infer route fall through to the router's 404.
    assert client.post(f"/v2/models/{name}/x/infer", content=b"{}").status_code == 404
    assert client.post("/v2/models//infer", content=b"{}").status_code == 404
    r = client.post(
        "/predict",
        content=b'{"records": [1]}',
        headers={"content-length": "99999999", "content-type": "application/json"},
    )
    assert r.status_code == 413
    # A chunked body (no Content-Length) is read whole.
    chunks = iter([b'{"records": ', json.dumps(feature_records[:2]).encode(), b"}"])
    r = client.post("/predict", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2


def test_hot_route_responses_are_counted_by_route_and_status_class(
    client: Any, feature_records: list[dict[str, Any]]
) -> None:
    from service import metric_queue, metrics

    def count(route: str, cls: str) -> float:
        metric_queue.flush()
        return (
            metrics.REGISTRY.get_sample_value(
                "gateway_http_requests_total", {"route": route, "status_class": cls}
            )
            or 0.0
        )

    ok, bad = count("predict", "2xx"), count("predict", "4xx")
    client.post("/predict", json={"records": feature_records[:1]})
    client.post("/predict", content=b"[]", headers={"content-type": "application/json"})
    assert (count("predict", "2xx"), count("predict", "4xx")) == (ok + 1, bad + 1)


def test_json_routes_refuse_other_content_types(client: Any, feature_records: list[dict[str, Any]]) -> None:
    """A page on another site can post text/plain or form data without a CORS preflight: refused,
    and nothing is recorded or joined."""
    import orjson

    body = orjson.dumps({"records": feature_records[:1], "request_id": "xsite"})
    for headers in (
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {},
    ):
        r = client.post("/predict", content=body, headers=headers)
        assert r.status_code == 415 and "Content-Type" in r.json()["error"], (headers, r.text)
        fb = client.post(
            "/feedback", content=b'{"request_id": "x", "row": 0, "label": "stay"}', headers=headers
        )
        assert fb.status_code == 415, headers
    ok = client.post("/predict", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200
    assert (
        client.put(
            "/admin/routing", content=b"{}", headers={**AUTH, "content-type": "text/plain"}
        ).status_code
        == 415
    )


def test_a_blank_admin_token_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="blank"):
        Settings(admin_token="  ")


def test_openapi_and_server_agree_on_edge_values(client: Any, feature_records: list[dict[str, Any]]) -> None:
    """What the documented models forbid the server refuses, and what they allow the server takes."""
    from pydantic import ValidationError

    from service.http.openapi import Label, PredictRequest

    for bad in ({"routing_key": ""}, {"request_id": "é"}, {"request_id": "x" * 129}):
        body = {"records": feature_records[:1], **bad}
        with pytest.raises(ValidationError):
            PredictRequest.model_validate(body)
        assert client.post("/predict", json=body).status_code == 400, bad
    doc = client.get("/openapi.json").json()
    feedback = doc["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    bare_list = [form for form in feedback["anyOf"] if form.get("type") == "array"]
    assert len(bare_list) == 1 and {"$ref": "#/components/schemas/Label"} in bare_list[0]["items"]["anyOf"]
    bare = [Label(request_id="nobody", row=0, label="stay").model_dump()]
    assert client.post("/feedback", json=bare).status_code == 200


def test_rows_the_models_cannot_score_are_refused_not_answered_with_nan(
    client: Any, gateway: Gateway, feature_records: list[dict[str, Any]]
) -> None:
    """Found by the schema fuzzer: a value near the float32 limit overflows inside a graph and a
    member answered NaN probabilities (sent as null). Now a 400 naming the row, nothing recorded."""
    row = {**feature_records[0], "age": -2.8836090355491356e38, "monthly income": 3.6e16}
    r = client.post(
        "/predict", json={"records": [feature_records[1], row], "request_id": "nan", "return_members": True}
    )
    assert r.status_code == 400 and r.json()["error"].startswith(
        "records[1]: expected values the models can score"
    ), r.text
    assert gateway.recording.barrier()
    assert ledger_count(gateway.settings.ledger_path) == 0
