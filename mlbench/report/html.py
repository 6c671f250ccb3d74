"""`results/report.html`: the whole run on one page to read and share.

Self-contained: figures are PNG data URIs, styles inline, no script, and a Content-Security-
Policy that forbids any request (a copy sent by mail renders the same, offline, and cannot
call home). It holds the mean accuracy beside the seed's published 2023 numbers, the table of
every run (accuracy with its 95% CI, macro-F1, latency p50/p95, throughput, training time, and
why a size is unavailable), the concurrent throughput beside the published one, and the figures.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlbench.io import atomic_write_text

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0 1em; }
th, td { padding: .25em .7em; border-bottom: 1px solid #e4e4e4; text-align: right;
         white-space: nowrap; }
th { background: #f3f5f7; white-space: normal; } td.l, th.l { text-align: left; }
tr.off td { color: #888; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 90%; } .note { color: #555; font-size: 90%; }
"""


@dataclass(frozen=True)
class Figure:
    """A PNG on disk and what it shows."""

    path: Path
    title: str
    caption: str = ""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, fmt: str) -> str:
    """`value` formatted, or "" when absent (None / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return ""


#: A table cell: its (escaped) HTML, or (HTML, how many columns it spans).
Cell = str | tuple[str, int]


def table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[Cell]],
          left: int = 1, row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; the first `left` columns are text (left-aligned), cells pre-escaped."""
    def cls(i: int) -> str:
        return ' class="l"' if i < left else ""

    def td(i: int, cell: Cell) -> str:
        if isinstance(cell, tuple):
            return f'<td class="l" colspan="{cell[1]}">{cell[0]}</td>'
        return f"<td{cls(i)}>{cell}</td>"

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(header))
    body = []
    for k, row in enumerate(rows):
        rc = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        body.append(f"<tr{rc}>" + "".join(td(i, c) for i, c in enumerate(row)) + "</tr>")
    return (f'<table id="{esc(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def figure(fig: Figure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    caption = f"<figcaption>{esc(fig.caption)}</figcaption>" if fig.caption else ""
    return (f'<figure><img alt="{esc(fig.title)}" src="data:image/png;base64,{data}">'
            f"{caption}</figure>")


def results_rows(runs: pd.DataFrame) -> tuple[list[list[Cell]], list[str]]:
    """One row per run of `collect_runs`' table; unavailable/missing runs say why."""
    rows, classes = [], []
    for r in runs.to_dict("records"):
        head = [esc(r["service"]), esc(r["dataset"]), esc(r["ablation"])]
        if r["status"] != "ok":
            why = f"{r['status']}: {r.get('reason') or ''}".rstrip(": ")
            rows.append(head + [(f"<em>{esc(why)}</em>", len(RESULTS_HEADER) - 3)])
            classes.append("off")
            continue
        ci = r.get("accuracy_ci95")
        lo, hi = ci if isinstance(ci, list | tuple) else (None, None)
        conc = r.get("load_concurrency")
        rps = _num(r.get("load_throughput_rps"), ".1f")
        under_load = (f"{rps} req/s <small>({_num(conc, '.0f')} in flight; p50 "
                      f"{_num(r.get('load_latency_p50_ms'), '.0f')} ms)</small>" if rps else "")
        rows.append(head + [
            f"{_num(r['accuracy'], '.3f')} ({_num(lo, '.3f')}&ndash;{_num(hi, '.3f')})",
            _num(r.get("macro_f1"), ".3f"),
            " / ".join(_num(r.get(f"latency_{p}_ms"), ".1f") for p in ("p50", "p90", "p99")),
            under_load,
            _num(r.get("load_seconds_per_1000_calls"), ".1f"),
            _num(r.get("train_seconds"), ".1f"),
            _num(r.get("cost_training_usd"), ".2f"),
            _num(r.get("cost_per_1000_usd"), ".3f"),
        ])
        classes.append("")
    return rows, classes


RESULTS_HEADER = ("service", "dataset", "images/class", "accuracy (95% CI)", "macro-F1",
                  "single-stream latency p50 / p90 / p99 (ms)", "under load",
                  "s per 1,000 calls", "training (s)", "USD per model",
                  "USD per 1,000 predictions")


def headline_rows(means: pd.DataFrame, sizes: Sequence[int]) -> list[list[str]]:
    """Mean accuracy (and how many datasets it averages) per source and service."""
    rows = []
    for (source, service), part in means.groupby(["source", "service"], sort=False):
        by = {int(n): (m, d) for n, m, d in zip(part["ablation"], part["mean"],
                                                   part["datasets"], strict=True)}
        rows.append([esc(service), esc(source)] + [
            f"{by[n][0]:.3f} <small>({by[n][1]})</small>" if n in by else "&ndash;"
            for n in sizes])
    return rows


def throughput_rows(throughputs: pd.DataFrame) -> list[list[str]]:
    return [[esc(r["service"]), esc(r["source"]), _num(r["seconds_per_1000"], ".1f")]
            for r in throughputs.to_dict("records")]


def render_page(*, title: str, intro: str, means: pd.DataFrame, runs: pd.DataFrame,
                throughputs: pd.DataFrame, figures: Sequence[Figure]) -> str:
    """The page's HTML. `means` = `plots.mean_accuracy_table` of this run + the published
    numbers (with `source`); `runs` = `collect_runs`' table; `throughputs` = service,
    seconds_per_1000, source."""
    sizes = sorted({int(n) for n in means["ablation"]}) if not means.empty else []
    rows, classes = results_rows(runs)
    parts = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">{intro}</p>',
        "<h2>Mean accuracy across datasets, this run and the published 2023 benchmark</h2>",
        table("headline", ["service", "source", *[f"{n}/class" for n in sizes]],
              headline_rows(means, sizes), left=2),
        '<p class="note">In brackets: how many datasets the mean is over. The 2023 benchmark '
        "used beans, cars, clothing, food, intel, pets and xrays; compare like with like.</p>",
        "<h2>Every run</h2>",
        table("results", RESULTS_HEADER, rows, left=3, row_classes=classes),
        '<p class="note">Single-stream latency: test images called one at a time, apart from '
        "the scoring pass (which keeps several calls in flight). Under load: the load test, "
        "requests completed per second with that many in flight, and the seconds 1,000 calls "
        "took (the seed's measure). USD per model: training hours as the vendor bills them "
        "times <code>prices.&lt;service&gt;.training_hour</code>; USD per 1,000 predictions: "
        "an endpoint kept busy at the load test's rate (its deployed hour spread over the calls "
        "it answers in an hour) plus any per-call price. Empty where params.yaml gives no "
        "price.</p>",
        "<h2>Concurrent throughput, this run and 2023</h2>",
        table("throughputs", ["service", "source", "seconds for 1,000 calls"],
              throughput_rows(throughputs), left=2),
        "<h2>Figures</h2>",
    ]
    for fig in figures:
        parts += [f"<h3>{esc(fig.title)}</h3>", figure(fig)]
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
        "</body></html>\n")


def write_page(path: Path, **content) -> Path:
    atomic_write_text(path, render_page(**content))
    return path
