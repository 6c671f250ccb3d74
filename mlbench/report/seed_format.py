"""The seed benchmark's result formats, read and written, and its names for the services.

Three formats, as `ajtatey/image-classification-services-benchmark` wrote them:

- per run, `<ds>-<svc>-results-<n>.csv` (its `nyckel.py`/`huggingface.py`/`vertex.py invoke`,
  read by its `get_results.py`): no header, one row per test image,
  `filename,actual_class,predicted_class,confidence,invoke_time`; `invoke_time` is seconds for
  `vertex`/`aws` and a `requests` `elapsed` timedelta (`0:00:00.123456`) for `nyckel`/`hg`;
- `image-classification-benchmark-data.csv`: `dataset,service,ablation,training times (s),
  accuracy (%),latency (s)` (accuracy holds fractions despite its name; latency is the mean
  seconds per call);
- `image-classification-throughputs.csv`: `service,throughput` = seconds for 1,000 calls sent
  10 at a time.

The seed spells services `hg`/`aws` in file names and `huggingface`/`aws` in its tables; reading
maps every spelling to the project's name, so one service is one line in every figure. The
published 2023 files ship in `published/` and are recognised by content wherever given from.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import pandas as pd

from mlbench.errors import UserError

SEED_COLUMNS = {
    "dataset": "dataset",
    "service": "service",
    "ablation": "ablation",
    "training times (s)": "train_seconds",
    "accuracy (%)": "accuracy",
    "latency (s)": "latency_s",
}

#: The seed's service names in its per-run file names (`<ds>-hg-results-5.csv`).
FILE_NAMES = {"huggingface": "hg", "rekognition": "aws"}
#: The seed's service names in its published tables.
TABLE_NAMES = {"rekognition": "aws"}
#: Every seed spelling -> the project's service name.
CANONICAL = {"hg": "huggingface", "aws": "rekognition"}
#: Services whose seed script wrote `invoke_time` as a `requests` elapsed timedelta.
TIMEDELTA_SERVICES = ("nyckel", "huggingface")

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
PUBLISHED_RESULTS = PUBLISHED_DIR / "image-classification-benchmark-data.csv"
PUBLISHED_THROUGHPUTS = PUBLISHED_DIR / "image-classification-throughputs.csv"
PUBLISHED_LABEL = "published 2023"
THIS_RUN = "this run"


def canonical_service(name: str) -> str:
    """The project's name of a service, whichever way the seed spelled it."""
    name = str(name).strip()
    return CANONICAL.get(name, name)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def _published_digests() -> frozenset[str]:
    return frozenset(_digest(p) for p in (PUBLISHED_RESULTS, PUBLISHED_THROUGHPUTS))


def is_published(path: Path) -> bool:
    """Whether `path` holds the seed's published 2023 numbers (a byte-identical copy)."""
    return path.is_file() and _digest(path) in _published_digests()


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a CSV file ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def read_seed_results(path: Path) -> pd.DataFrame:
    """A seed-format results table in the tidy columns the plots use, services renamed."""
    frame = _read_csv(path)
    missing = [c for c in SEED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                        f"{','.join(SEED_COLUMNS)}")
    frame = frame.rename(columns=SEED_COLUMNS)[list(SEED_COLUMNS.values())]
    for col in ("ablation", "train_seconds", "accuracy", "latency_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    bad = frame["accuracy"].dropna()
    if ((bad < 0) | (bad > 1)).any():
        raise UserError(f"{path}: accuracy (%) must hold fractions in [0, 1], as the seed's do")
    frame["service"] = frame["service"].map(canonical_service)
    return frame


def read_seed_throughputs(path: Path) -> pd.DataFrame:
    """A seed throughputs table: service, seconds_per_1000 (services renamed)."""
    frame = _read_csv(path)
    if list(frame.columns[:2]) != ["service", "throughput"]:
        raise UserError(f"{path}: expected columns service,throughput")
    frame = frame.rename(columns={"throughput": "seconds_per_1000"})
    frame["service"] = frame["service"].map(canonical_service)
    frame["seconds_per_1000"] = pd.to_numeric(frame["seconds_per_1000"], errors="coerce")
    return frame[["service", "seconds_per_1000"]]


def to_seed_results(runs: pd.DataFrame) -> pd.DataFrame:
    """Tidy runs (service, dataset, ablation, train_seconds, accuracy, latency_s) -> the seed's
    published table, services under the seed's table names."""
    inverse = {v: k for k, v in SEED_COLUMNS.items()}
    table = runs[list(SEED_COLUMNS.values())].rename(columns=inverse)
    table["service"] = table["service"].map(lambda s: TABLE_NAMES.get(s, s))
    return table


def to_seed_throughputs(per_service: pd.DataFrame) -> pd.DataFrame:
    """service, seconds_per_1000 -> the seed's `service,throughput` table."""
    return pd.DataFrame({
        "service": [TABLE_NAMES.get(s, s) for s in per_service["service"]],
        "throughput": per_service["seconds_per_1000"].round(2),
    })


def seed_results_name(ds: str, service: str, n: int) -> str:
    """`<ds>-<svc>-results-<n>.csv` with the seed's short service name (`hg`, `aws`)."""
    return f"{ds}-{FILE_NAMES.get(service, service)}-results-{n}.csv"


def elapsed_text(seconds: float) -> str:
    """Seconds as `str(requests' elapsed)`, always with microseconds: `0:00:00.123456` (the
    seed's `get_results.py` reads it back with `[-8:-1]`)."""
    micros = round(seconds * 1_000_000)
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    secs, micros = divmod(rest, 1_000_000)
    return f"{hours}:{minutes:02d}:{secs:02d}.{micros:06d}"


def seed_result_rows(predictions: pd.DataFrame, service: str) -> list[list[str]]:
    """The rows of a seed per-run results file from `evaluate`'s predictions.csv.

    Calls that failed after retries are left out (the seed's scripts stopped on them; ours are
    error rows, not answers), so the seed's accuracy over the file equals ours.
    """
    answered = predictions[predictions["error"].fillna("").astype(str) == ""]
    as_elapsed = service in TIMEDELTA_SERVICES
    rows = []
    for r in answered.itertuples(index=False):
        seconds = float(r.invoke_time)
        rows.append([r.image, r.actual_class, r.predicted_class, str(r.confidence),
                     elapsed_text(seconds) if as_elapsed else f"{seconds:.6f}"])
    return rows
