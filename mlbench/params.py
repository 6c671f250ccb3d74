"""Typed, validated view of `params.yaml`, the single knob board of the benchmark.

Every stage reads its settings through `load_params()`. A bad value raises `UserError` with one
line naming the key and what is allowed, so `dvc repro` fails with a message instead of a
traceback deep inside a stage.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mlbench import paths
from mlbench.errors import UserError

LOAD_MODES = ("batch", "sustained")
#: Every top-level key params.yaml may hold besides the services' own blocks.
CORE_KEYS = ("datasets", "ablations", "ablation", "seed", "val_fraction", "test_per_class",
             "max_side", "buckets", "services", "load", "evaluate", "latency", "sources",
             "keep_deployed", "prices", "schedule")
SCHEDULES = ("parallel", "serial")
#: What each service's `prices.<service>` block may price, in USD.
PRICE_KEYS = ("training_hour", "deployed_hour", "per_1000_calls")
BUCKET_KEYS = ("google", "aws", "azure")


@dataclass(frozen=True)
class LoadParams:
    calls: int = 1000
    concurrency: int = 10
    mode: Literal["batch", "sustained"] = "batch"
    timeout: float = 30.0


@dataclass(frozen=True)
class EvaluateParams:
    #: Score again, on a rerun, the images whose call failed last time (error rows).
    retry_errors: bool = True
    #: Requests in flight while scoring the test set (1: one at a time, as the seed did).
    concurrency: int = 8


@dataclass(frozen=True)
class LatencyParams:
    #: Test images called one at a time, after scoring, for the single-stream latency.
    samples: int = 200


@dataclass(frozen=True)
class Params:
    datasets: tuple[str, ...] = ("digits",)
    ablations: tuple[int, ...] = (5, 20, 80, 320, 1280)
    ablation: int | None = None  # None means "all"
    seed: int = 0
    val_fraction: float = 0.2
    test_per_class: int | None = None  # None means "all"
    max_side: int = 1024
    buckets: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = ("local",)
    load: LoadParams = field(default_factory=LoadParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    latency: LatencyParams = field(default_factory=LatencyParams)
    #: `parallel`: every training started at once, every run scored side by side; `serial`:
    #: one after the other, as the seed did (what the seed-scale benchmark compares against).
    schedule: str = "parallel"
    #: Leave models deployed after the run (else the `teardown` stage stops what bills).
    keep_deployed: bool = False
    #: service -> price key (`PRICE_KEYS`) -> USD; what a run's hours and calls cost.
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every size the `ablate` stage writes: the ladder plus an explicit `ablation`."""
        extra = () if self.ablation is None or self.ablation in self.ablations else (self.ablation,)
        return tuple(sorted(set(self.ablations) | set(extra)))

    @property
    def selected_sizes(self) -> tuple[int, ...]:
        """The sizes `train`/`evaluate`/`load` run on: the ladder, or just `ablation`."""
        return tuple(sorted(self.ablations)) if self.ablation is None else (self.ablation,)

    def section(self, name: str) -> dict[str, Any]:
        """A service's own settings block (`local:`, `vertex:`, ...); the service validates it."""
        value = self.raw.get(name) or {}
        if not isinstance(value, dict):
            raise UserError(f"params.yaml: {name}: must be a mapping of settings, got {value!r}")
        return value


def _fail(key: str, allowed: str, value: Any) -> UserError:
    return UserError(f"params.yaml: {key}: {allowed}, got {value!r}")


def unknown_key(where: str, key: Any, known: Iterable[str], word: str = "key") -> UserError:
    """A typo is an error, never silently ignored: name the nearest valid key."""
    options = sorted(known)
    near = difflib.get_close_matches(str(key), options, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return UserError(f"params.yaml: {where}{key}: unknown {word}; {hint}use one of "
                     f"{', '.join(options)}")


def check_keys(where: str, mapping: Mapping[str, Any], known: Iterable[str],
               word: str = "key") -> None:
    """Refuse the first key of `mapping` not in `known` (`where`: its prefix, e.g. `load.`)."""
    options = set(known)
    for key in mapping:
        if key not in options:
            raise unknown_key(where, key, options, word)


def _number(key: str, value: Any) -> float:
    """A finite number (`.inf` and `.nan` are YAML numbers, but never a valid setting)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(key, "must be a finite number", value)
    return value


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(key, "must be a positive integer", value)
    return value


def _int_or_all(key: str, value: Any) -> int | None:
    if value in (None, "all"):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(key, "must be 'all' or a positive integer", value)
    return value


def _name_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(key, "must be a non-empty list of names", value)
    if len(set(value)) != len(value):
        raise _fail(key, "must not repeat a name", value)
    return tuple(value)


def parse_params(data: dict[str, Any], extra_keys: Iterable[str] | None = None) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`.

    This checks the shape of every key; which dataset and service names exist, and each
    service's own block, are checked by `mlbench.project`, which knows what is installed and
    passes the services' block names as `extra_keys` (None: top-level keys are not checked).
    """
    if not isinstance(data, dict):
        raise UserError("params.yaml: must be a mapping of keys to values")
    if extra_keys is not None:
        check_keys("", data, (*CORE_KEYS, *extra_keys))
    defaults = Params()

    datasets = _name_list("datasets", data.get("datasets", list(defaults.datasets)))

    ablations_raw = data.get("ablations", list(defaults.ablations))
    if not isinstance(ablations_raw, list) or not ablations_raw:
        raise _fail("ablations", "must be a non-empty list of positive integers", ablations_raw)
    ablations = tuple(_positive_int("ablations", a) for a in ablations_raw)
    if len(set(ablations)) != len(ablations):
        raise _fail("ablations", "must not repeat a size", ablations_raw)

    ablation = _int_or_all("ablation", data.get("ablation", "all"))
    if ablation is not None and ablation < 2:
        raise _fail("ablation", "needs at least 2 images per class (one for validation)", ablation)

    seed = data.get("seed", defaults.seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail("seed", "must be a non-negative integer", seed)

    val_fraction = data.get("val_fraction", defaults.val_fraction)
    if not 0 <= _number("val_fraction", val_fraction) < 1:
        raise _fail("val_fraction", "must be a number in [0, 1)", val_fraction)

    test_per_class = _int_or_all("test_per_class", data.get("test_per_class", "all"))
    max_side = _positive_int("max_side", data.get("max_side", defaults.max_side))

    buckets = data.get("buckets") or {}
    if not isinstance(buckets, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in buckets.items()
    ):
        raise _fail("buckets", "must map google/aws/azure to bucket names", buckets)
    check_keys("buckets.", buckets, BUCKET_KEYS)

    services = _name_list("services", data.get("services", list(defaults.services)))

    load_raw = data.get("load") or {}
    if not isinstance(load_raw, dict):
        raise _fail("load", "must be a mapping", load_raw)
    check_keys("load.", load_raw, LoadParams.__dataclass_fields__)
    calls = _positive_int("load.calls", load_raw.get("calls", LoadParams.calls))
    concurrency = _positive_int("load.concurrency", load_raw.get("concurrency", 10))
    mode = load_raw.get("mode", LoadParams.mode)
    if mode not in LOAD_MODES:
        raise _fail("load.mode", f"must be one of {', '.join(LOAD_MODES)}", mode)
    timeout = load_raw.get("timeout", LoadParams.timeout)
    if _number("load.timeout", timeout) <= 0:
        raise _fail("load.timeout", "must be a positive number of seconds", timeout)

    evaluate_raw = data.get("evaluate") or {}
    if not isinstance(evaluate_raw, dict):
        raise _fail("evaluate", "must be a mapping", evaluate_raw)
    check_keys("evaluate.", evaluate_raw, EvaluateParams.__dataclass_fields__)
    retry_errors = evaluate_raw.get("retry_errors", EvaluateParams.retry_errors)
    if not isinstance(retry_errors, bool):
        raise _fail("evaluate.retry_errors", "must be true or false", retry_errors)
    scoring = _positive_int("evaluate.concurrency",
                            evaluate_raw.get("concurrency", EvaluateParams.concurrency))

    latency_raw = data.get("latency") or {}
    if not isinstance(latency_raw, dict):
        raise _fail("latency", "must be a mapping", latency_raw)
    check_keys("latency.", latency_raw, LatencyParams.__dataclass_fields__)
    samples = _positive_int("latency.samples", latency_raw.get("samples", LatencyParams.samples))

    schedule = data.get("schedule", defaults.schedule)
    if schedule not in SCHEDULES:
        raise _fail("schedule", f"must be one of {', '.join(SCHEDULES)}", schedule)

    keep_deployed = data.get("keep_deployed", defaults.keep_deployed)
    if not isinstance(keep_deployed, bool):
        raise _fail("keep_deployed", "must be true or false", keep_deployed)

    prices_raw = data.get("prices") or {}
    if not isinstance(prices_raw, dict):
        raise _fail("prices", "must map service names to prices such as {deployed_hour: 1.4}",
                    prices_raw)
    prices: dict[str, dict[str, float]] = {}
    for service, block in prices_raw.items():
        if not isinstance(block, dict):
            raise _fail(f"prices.{service}", f"must map {', '.join(PRICE_KEYS)} to USD", block)
        check_keys(f"prices.{service}.", block, PRICE_KEYS)
        for key, value in block.items():
            if _number(f"prices.{service}.{key}", value) < 0:
                raise _fail(f"prices.{service}.{key}", "must be a price in USD (>= 0)", value)
        prices[str(service)] = {k: float(v) for k, v in block.items()}

    sources = data.get("sources") or {}
    if not isinstance(sources, dict) or not all(
        isinstance(v, dict | type(None)) for v in sources.values()
    ):
        raise _fail("sources", "must map dataset names to settings such as {url: ...}", sources)

    return Params(
        datasets=datasets,
        ablations=ablations,
        ablation=ablation,
        seed=seed,
        val_fraction=float(val_fraction),
        test_per_class=test_per_class,
        max_side=max_side,
        buckets=dict(buckets),
        services=services,
        load=LoadParams(calls=calls, concurrency=concurrency, mode=mode, timeout=float(timeout)),
        evaluate=EvaluateParams(retry_errors=retry_errors, concurrency=scoring),
        latency=LatencyParams(samples=samples),
        schedule=schedule,
        keep_deployed=keep_deployed,
        prices=prices,
        sources={k: dict(v or {}) for k, v in sources.items()},
        raw=data,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: plain
    YAML keeps the last value silently, so a second `seed:` further down would win unseen."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first[key] + 1}); keep "
                    "one", key_node.start_mark)
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; a one-line `UserError` for bytes that are not UTF-8, a key
    given twice, or broken syntax (with the line)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                        f"{exc.start}); save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        detail = problem if problem.startswith("duplicate key") else \
            f"is not valid YAML ({problem}); fix the syntax"
        raise UserError(f"{path}:{where} {detail}") from None


def load_params(path: Path = paths.PARAMS_FILE, extra_keys: Iterable[str] | None = None
                ) -> Params:
    """Read and validate `params.yaml` (defaults for every missing key)."""
    if not path.exists():
        raise UserError(f"{path}: not found; run mlbench from the project root (beside dvc.yaml)")
    return parse_params(read_yaml(path) or {}, extra_keys)


class SettingsBlock:
    """Typed reads from one service's block of params.yaml (`nyckel:`, `vertex:`, ...).

    Each service validates its own block through this, so every bad value reads the same way:
    one line `params.yaml: <block>.<key>: <what is allowed>, got <value>`; an unknown key (a
    typo) is refused rather than silently ignored.
    """

    def __init__(self, block: str, raw: Mapping[str, Any] | None, known: Iterable[str]):
        self.block = block
        self.raw: Mapping[str, Any] = raw or {}
        if not isinstance(self.raw, Mapping):
            raise UserError(f"params.yaml: {block}: must be a mapping of settings, got {raw!r}")
        check_keys(f"{block}.", self.raw, known, word="setting")

    def fail(self, key: str, allowed: str, value: Any) -> UserError:
        return UserError(f"params.yaml: {self.block}.{key}: {allowed}, got {value!r}")

    def number(self, key: str, default: float | None, lo: float, hi: float | None = None, *,
               integer: bool = False, lo_open: bool = False) -> Any:
        """A number in [lo, hi] (or (lo, hi] with `lo_open`; no upper bound when hi is None)."""
        value = self.raw.get(key, default)
        kind = int if integer else int | float
        ok = (not isinstance(value, bool) and isinstance(value, kind) and math.isfinite(value)
              and (lo < value if lo_open else lo <= value) and (hi is None or value <= hi))
        if not ok:
            what = "an integer" if integer else "a number"
            span = (f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]" if hi is not None
                    else f"{'>' if lo_open else '>='} {lo:g}")
            raise self.fail(key, f"must be {what} {span}", value)
        return value if integer else float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false", value)
        return value

    def text(self, key: str, default: str | None, *, allow_empty: bool = False) -> str | None:
        """A string (stripped); None stays None when that is the default."""
        value = self.raw.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or (not value.strip() and not allow_empty):
            raise self.fail(key, "must be a non-empty string", value)
        return value.strip()

    def choice(self, key: str, default: str, allowed: Iterable[str]) -> str:
        options = tuple(allowed)
        value = self.raw.get(key, default)
        if value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)}", value)
        return value

    def per_ablation(self, key: str, what: str, check: Callable[[Any], bool] = lambda _: True,
                     convert: Callable[[Any], Any] = lambda v: str(v).strip()
                     ) -> dict[str, dict[int, Any]]:
        """`<block>.<key>.<dataset>.<ablation>: <value>`, e.g. a hand-given endpoint per ablation.

        Every service that can be pointed at resources made by hand reads them in this one
        shape. A value (text or a number) is turned into what the service needs by `convert`
        (text by default), and `check` says whether the result is well formed; `what` names
        it in errors.
        """
        raw = self.raw.get(key) or {}
        if not isinstance(raw, Mapping):
            raise self.fail(key, f"must map dataset -> ablation -> {what}", raw)
        out: dict[str, dict[int, Any]] = {}
        for ds, sizes in raw.items():
            if not isinstance(sizes, Mapping):
                raise self.fail(f"{key}.{ds}", f"must map ablation sizes to {what}s (one per "
                                "ablation)", sizes)
            for size, value in sizes.items():
                n = int(size) if isinstance(size, str) and size.isdigit() else size
                if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                    raise self.fail(f"{key}.{ds}", "ablation sizes must be positive integers",
                                    size)
                try:
                    ok = (not isinstance(value, bool) and isinstance(value, str | int | float)
                          and (converted := convert(value)) != "" and check(converted))
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise self.fail(f"{key}.{ds}.{n}", f"must be a valid {what}", value)
                out.setdefault(str(ds), {})[n] = converted
        return out

    def mapping(self, key: str, shape: str) -> Mapping[str, Any]:
        """A mapping such as dataset -> ablation -> id (`shape` says which, for the error)."""
        value = self.raw.get(key) or {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must map {shape}", value)
        return value
