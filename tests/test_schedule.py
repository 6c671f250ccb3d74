"""Submit everything, then wait; measure side by side; time single calls apart (issue 11)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mlbench import paths
from mlbench.io import read_json
from mlbench.project import parse_checked_params
from tests.test_adding_a_service import acme, acme_package  # noqa: F401 - fixtures


def _params(project: Path, fake, **extra):  # noqa: ANN001, ANN202
    data = yaml.safe_load((project / "params.yaml").read_text())
    data.update(services=["local", "acme"], datasets=["digits"], ablations=[5, 20],
                test_per_class=3, local={"features": "hog"})
    data["acme"] = {"url": fake.server.url, "poll_seconds": 0.01, "train_timeout": 30,
                    **extra.pop("acme", {})}
    data.update(extra)
    (project / "params.yaml").write_text(yaml.safe_dump(data))
    from mlbench.data.export import write_test_table

    write_test_table("digits", 3, 0)
    return parse_checked_params(data)


def _train_once_every_upload_is_in(fake, ablations: tuple[int, ...] = (5, 20)) -> None:  # noqa: ANN001
    """No model is trained before every run's upload has ended (and its run has had a moment to
    queue for a training slot), however slowly the machine uploads: the uploads are whole when
    their sizes are in the ablations' ratio and no image came for half a second."""

    def every_upload_is_in(model: dict) -> bool:
        sizes = sorted(map(len, list(fake.images.values())))  # a copy: uploads go on
        smallest, *want = sorted(ablations)
        return len(sizes) == len(ablations) and \
            all(size * smallest == sizes[0] * n for size, n in zip(sizes[1:], want, strict=True)) \
            and time.monotonic() - fake.last_image_at > 0.5

    fake.ready_when = every_upload_is_in


def test_every_training_is_started_before_any_is_waited_on(acme_package, acme, digits_copy,  # noqa: F811
                                                           monkeypatch):
    from mlbench.bench import schedule
    from mlbench.bench.schedule import run_submit
    from mlbench.bench.train import run_training

    acme.ready_when = lambda model: len(acme.models) == 2  # not trained until both started
    params = _params(digits_copy, acme)
    read = Counter()
    load_split, manifest_hashes = schedule.load_split, schedule.manifest_hashes
    monkeypatch.setattr(schedule, "load_split",
                        lambda ds, n: read.update([(ds, n)]) or load_split(ds, n))
    monkeypatch.setattr(schedule, "manifest_hashes",
                        lambda ds: read.update([ds]) or manifest_hashes(ds))
    assert run_submit(params) == {"acme/digits/20": "trained", "acme/digits/5": "trained"}
    # each split read once, the manifest once (fingerprints and records reuse them)
    assert read == {("digits", 5): 1, ("digits", 20): 1, "digits": 1}
    assert acme.training_at_once == 2  # both started before either was trained
    assert read_json(paths.trainings_file()) == {"acme/digits/20": "trained",
                                                 "acme/digits/5": "trained"}
    assert not paths.model_json("local", "digits", 5).exists()  # local trains in its stage
    # each model is recorded as soon as it is trained: the train stage has nothing to ask
    recorded = paths.model_json("acme", "digits", 20).read_text()
    assert '"fingerprint"' in recorded
    created, calls = len(acme.models), len(acme.server.log)
    models = run_training(params, "acme", "digits")
    assert len(acme.server.log) == calls  # not one call to the vendor
    assert paths.model_json("acme", "digits", 20).read_text() == recorded
    # after a crash between training and recording, the train stage re-attaches instead
    paths.model_json("acme", "digits", 20).unlink()
    models = run_training(params, "acme", "digits")
    assert len(acme.models) == created == 2
    assert sorted(m.ids["model_id"] for m in models) == ["m1", "m2"]
    assert paths.model_json("acme", "digits", 20).exists()
    # a second submit finds every model of the run trained, and says so in the same words (so
    # the train stages, which depend on what it writes, stay up to date)
    assert run_submit(params) == {"acme/digits/20": "trained", "acme/digits/5": "trained"}
    assert len(acme.models) == 2


def test_a_vendors_limit_keeps_its_trainings_one_at_a_time(acme_package, acme, digits_copy):  # noqa: F811
    from mlbench.bench.schedule import run_submit

    _train_once_every_upload_is_in(acme)  # so without the limit both would train at once
    params = _params(digits_copy, acme, acme={"max_concurrent_trainings": 1})
    run_submit(params)
    assert acme.training_at_once == 1 and len(acme.models) == 2


def test_a_run_is_measured_as_soon_as_trained_while_others_still_train(acme_package, acme,  # noqa: F811
                                                                      digits_copy):
    """One slot: the first model is scored and load-tested while the second trains (scoring
    does not wait behind the longest training), and the measure stage then finds both runs
    measured: it calls the vendor no more."""
    from mlbench.bench.measure import run_measure
    from mlbench.bench.schedule import run_submit
    from mlbench.bench.train import run_training

    def second_trains_until_first_scored(model: dict) -> bool:
        return model["id"] == "m1" or any(r.path == "/v1/models/m1/predict"
                                          for r in list(acme.server.log))

    acme.ready_when = second_trains_until_first_scored  # a scheduler that waits times out
    params = _params(digits_copy, acme, acme={"max_concurrent_trainings": 1})
    run_submit(params)
    log = [(r.method, r.path) for r in acme.server.log]
    first, second = sorted(acme.models.values(), key=lambda m: m["_created"])
    scored_first = log.index(("POST", f"/v1/models/{first['id']}/predict"))
    last_poll_second = max(i for i, call in enumerate(log)
                           if call == ("GET", f"/v1/models/{second['id']}"))
    assert scored_first < last_poll_second
    for n in (5, 20):
        assert paths.predictions_csv("acme", "digits", n).exists()
        assert paths.throughput_summary("acme", "digits", n).exists()
    run_training(params, "acme", "digits")
    calls = len(acme.server.log)
    outcomes = run_measure(params)
    assert len(acme.server.log) == calls
    assert {k for k, v in outcomes.items() if isinstance(v, dict)} >= {"acme/digits/5",
                                                                       "acme/digits/20"}


def test_a_vendors_free_slot_goes_to_the_largest_ablation_waiting(acme_package, acme, digits_copy):  # noqa: F811
    """With one slot, the smallest ablation (uploaded first) trains first; when it is done,
    of the two waiting the larger goes next, whatever order their uploads ended in."""
    from mlbench.bench.schedule import run_submit

    params = _params(digits_copy, acme, ablations=[5, 20, 80],
                     acme={"max_concurrent_trainings": 1})
    _train_once_every_upload_is_in(acme, (5, 20, 80))
    run_submit(params)
    started = [m["dataset"].split("-")[2] for m in sorted(acme.models.values(),
                                                          key=lambda m: m["_created"])]
    assert started == ["5", "80", "20"]


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 9)), unique=True))
def test_trainings_start_largest_first_taking_services_in_turn(keys):
    from mlbench.bench.schedule import Planned, longest_first

    runs = [Planned(svc, "ds", n, f"{svc}{n}") for svc, n in keys]
    order = longest_first(runs)
    assert sorted(order, key=str) == sorted(runs, key=str)  # each run once
    for svc in {r.service for r in runs}:
        sizes = [r.ablation for r in order if r.service == svc]
        assert sizes == sorted(sizes, reverse=True)
    # services in turn: among the first k runs, no service has more than one over another's
    # count while that other still has runs left
    for k in range(len(order)):
        head = Counter(r.service for r in order[:k])
        total = Counter(r.service for r in runs)
        for a in total:
            for b in total:
                if head[b] < total[b]:
                    assert head[a] <= head[b] + 1


def test_slots_go_to_the_best_ranked_waiter():
    import threading
    import time

    from mlbench.bench.schedule import Slots

    slots, got = Slots(1), []
    hold_first = threading.Event()

    def take(rank: int) -> None:
        with slots.hold(rank):
            got.append(rank)
            if rank == 5:
                hold_first.wait(5)

    first = threading.Thread(target=take, args=(5,))
    first.start()
    while not got:
        time.sleep(0.01)
    waiters = [threading.Thread(target=take, args=(r,)) for r in (3, 9, 1, 7)]
    for t in waiters:
        t.start()
    while len(slots._waiting) < 4:  # all four queued behind the first
        time.sleep(0.01)
    hold_first.set()
    for t in [first, *waiters]:
        t.join(5)
    assert got == [5, 1, 3, 7, 9]


def test_serial_schedule_starts_nothing_ahead(acme_package, acme, digits_copy):  # noqa: F811
    from mlbench.bench.measure import run_measure
    from mlbench.bench.schedule import run_submit

    params = _params(digits_copy, acme, schedule="serial")
    assert run_submit(params) == {} and not acme.models
    assert run_measure(params) == {}


def test_runs_are_measured_side_by_side_and_latency_is_timed_one_call_at_a_time(
        acme_package, acme, digits_copy, monkeypatch):  # noqa: F811
    from mlbench.bench.measure import run_measure
    from mlbench.bench.schedule import run_submit
    from mlbench.bench.train import run_training
    from mlbench.services.local.service import LocalService

    acme.predict_delay = 0.05
    params = _params(digits_copy, acme, evaluate={"concurrency": 4}, latency={"samples": 5},
                     load={"calls": 12, "concurrency": 3})
    run_submit(params)
    run_training(params, "local", "digits")
    run_training(params, "acme", "digits")
    servers = Counter()
    connect = LocalService.connect
    monkeypatch.setattr(LocalService, "connect", lambda svc, model: (
        servers.update([model.ablation]), connect(svc, model))[1])
    measured = run_measure(params)
    # scoring, the single-stream pass and the load test of a run share one model server
    assert servers == {5: 1, 20: 1}
    assert set(measured) == {"local/digits/5", "local/digits/20", "acme/digits/5",
                             "acme/digits/20"}
    assert all(0 <= m["accuracy"] <= 1 and m["throughput_rps"] > 0 for m in measured.values())
    # two acme runs at once, 4 calls in flight each: more than one run's worth at a time
    assert acme.most_in_flight > 4
    for n in (5, 20):
        rows = paths.predictions_csv("acme", "digits", n).read_text().splitlines()
        assert len(rows) == 1 + 30  # every test image, once
        latency = paths.latency_csv("acme", "digits", n).read_text().splitlines()
        assert len(latency) == 1 + 5
        metrics = read_json(paths.run_metrics_json("acme", "digits", n))
        assert metrics["latency_source"] == "single-stream pass of 5 images"
        assert metrics["scoring_concurrency"] == 4
        # one call at a time: the fake's 50 ms, not the queueing of 8 in flight
        assert 50 <= metrics["latency_p50_ms"] < 200
        load = read_json(paths.throughput_summary("acme", "digits", n))
        assert load["calls"] == 12 and load["concurrency"] == 3
    calls = len(acme.server.log)
    # the evaluate and load stages that follow only find what was measured: no call again
    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.load import run_load

    run_evaluation(params, "acme", "digits")
    run_load(params, "acme", "digits")
    assert len(acme.server.log) == calls
    # other load settings are another test: the load stage runs it
    other = parse_checked_params({**params.raw, "load": {"calls": 6, "concurrency": 3}})
    [summary] = run_load(other, "acme", "digits", [5])
    assert summary["calls"] == 6 and len(acme.server.log) == calls + 6


def test_a_load_test_runs_alone_its_vendors_scoring_calls_wait():
    """While a load test holds the vendor, no scoring call of that vendor starts, and the
    load test starts only once the calls in flight have finished."""
    import threading
    import time

    from mlbench.bench.traffic import VendorTraffic

    traffic = VendorTraffic(None)
    events: list[str] = []
    in_call = threading.Event()

    def scoring_call(tag: str, hold: float) -> None:
        with traffic.call():
            events.append(f"{tag} start")
            in_call.set()
            time.sleep(hold)
            events.append(f"{tag} end")

    first = threading.Thread(target=scoring_call, args=("a", 0.2))
    first.start()
    in_call.wait(5)

    def load_test() -> None:
        with traffic.alone():
            events.append("load start")
            time.sleep(0.2)
            events.append("load end")

    load = threading.Thread(target=load_test)
    load.start()
    while not traffic._alone:  # the load test is now waiting for "a" to finish
        time.sleep(0.01)
    second = threading.Thread(target=scoring_call, args=("b", 0.0))
    second.start()
    for t in (first, load, second):
        t.join(5)
    assert events == ["a start", "a end", "load start", "load end", "b start", "b end"]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_scoring_is_exact_whatever_the_concurrency(acme_package, acme, digits_copy, concurrency):  # noqa: F811
    """No image lost or scored twice, in the seed's one-at-a-time mode or with calls in flight,
    including after a run is cut short."""
    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.train import run_training

    params = _params(digits_copy, acme, ablations=[5], evaluate={"concurrency": concurrency})
    run_training(params, "acme", "digits")
    run_evaluation(params, "acme", "digits")
    out = paths.predictions_csv("acme", "digits", 5)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:11]) + lines[11][:7])  # cut: 10 rows kept, one torn
    before = len([r for r in acme.server.log if r.path.endswith("/predict")])
    run_evaluation(params, "acme", "digits")
    rows = out.read_text().splitlines()[1:]
    assert len(rows) == 30 and len({r.split(",")[0] for r in rows}) == 30
    rescored = len([r for r in acme.server.log if r.path.endswith("/predict")]) - before
    assert rescored == 20  # the torn row's image and the 19 never written
    metrics = read_json(paths.run_metrics_json("acme", "digits", 5))
    expected = "scoring, one call at a time" if concurrency == 1 else \
        "single-stream pass of 30 images"
    assert metrics["latency_source"] == expected


def test_a_slow_vendor_never_holds_another_vendors_places(monkeypatch):
    """One place per vendor: while a rate-limited vendor's run is stuck, the other vendor's
    runs are measured (one pool per vendor, not one for all)."""
    import threading
    from types import SimpleNamespace

    from mlbench.bench import measure
    from mlbench.core import ModelRef

    release, order = threading.Event(), []

    def measure_run(params, service, model, tests, vendor, board):  # noqa: ANN001, ANN202
        if service == "nyckel":
            release.wait(10)
        order.append(service)
        if order.count("vertex") == 2:
            release.set()
        return {"accuracy": 1.0, "throughput_rps": 1.0}

    monkeypatch.setattr(measure, "measure_run", measure_run)
    monkeypatch.setattr(measure, "MAX_MEASURED", 1)
    runs = [(svc, ModelRef(svc, "ds", n)) for svc in ("nyckel", "vertex") for n in (5, 20)]
    outcomes = measure._measure_all(SimpleNamespace(services=["nyckel", "vertex"]), runs,
                                    {"ds": []})
    assert order == ["vertex", "vertex", "nyckel", "nyckel"] and len(outcomes) == 4
