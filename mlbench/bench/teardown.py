"""`teardown` stage and `mlbench status`: nothing billed stays up after a run unless asked.

Deployed endpoints bill by the hour (Vertex per node-hour, Rekognition per inference-unit
hour) whether anyone calls them or not. The pipeline's stage after every evaluate and load
tears down every model the run's services deployed (`keep_deployed: true` keeps them), and
`mlbench status` lists what is up now, for how long, and what it costs per hour
(`prices.<service>.deployed_hour`, per billed unit).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mlbench import paths
from mlbench.bench.runs import selected_sizes
from mlbench.console import err, out, warn
from mlbench.core import ModelRef
from mlbench.errors import ServiceError, UserError
from mlbench.io import atomic_write_json
from mlbench.params import Params
from mlbench.services.cloud import Deployment
from mlbench.services.registry import open_service

#: Deployments torn down at once (the seed-scale run has 120, each a few vendor calls and polls).
TEARDOWNS_AT_ONCE = 16


def tear_down(params: Params, service: str, model: ModelRef) -> tuple[str, bool]:
    """One model's teardown: its line, and whether it succeeded."""
    where = f"{service}/{model.dataset}/{model.ablation}"
    try:
        with open_service(params, service, model.dataset, model.ablation) as svc:
            return f"{where}: {svc.teardown(model)}", True
    except (ServiceError, UserError) as exc:
        return f"{where}: {exc}", False


def run_teardown(params: Params) -> list[str]:
    """Tear down the deployed models of every (service, dataset, size) of the run; one line
    each, also written to `results/teardown.json` (what the report waits on). Every model is
    tried even when one fails; then the failures are one error."""
    if params.keep_deployed:
        err.print("keep_deployed: true: nothing torn down (`mlbench status` lists what bills)")
        atomic_write_json(paths.teardown_file(), {"keep_deployed": True, "torn_down": []})
        return []
    deployed = [(service, model) for service in params.services for ds in params.datasets
                for n in selected_sizes(params, ds, quiet=True)
                if (model := ModelRef.load(paths.model_json(service, ds, n))) is not None]
    done, failed = [], []
    with ThreadPoolExecutor(TEARDOWNS_AT_ONCE) as pool:  # each mostly waits for its vendor
        for line, ok in pool.map(lambda run: tear_down(params, *run), deployed):
            if ok:
                err.print(line)
                done.append(line)
            else:
                failed.append(line)
                warn(line)
    atomic_write_json(paths.teardown_file(), {"keep_deployed": False, "torn_down": done,
                                              "failed": failed})
    if failed:
        raise ServiceError(f"{len(failed)} teardown(s) failed (rerun `mlbench teardown`, or "
                           f"stop them by hand: `mlbench status` lists them); first: "
                           f"{failed[0]}")
    return done


@dataclass(frozen=True)
class Billed:
    """One deployed resource: where, since when, and what it costs."""

    service: str
    dataset: str
    ablation: int
    resource: str
    since: str
    hours: float
    per_hour: float | None  # all its billed units together

    @property
    def so_far(self) -> float | None:
        return None if self.per_hour is None else self.hours * self.per_hour


def billed(params: Params) -> list[Billed]:
    """Every resource the project knows is deployed now (any service, dataset, size)."""
    found = []
    for path in paths.deployment_files():
        record = Deployment(path)
        if not record.get("up"):
            continue
        service, ds = path.parent.parent.name, path.parent.name
        rate = params.prices.get(service, {}).get("deployed_hour")
        found.append(Billed(service, ds, int(path.stem), str(record.get("resource")),
                            str(record.get("since")), record.seconds_up() / 3600,
                            None if rate is None else rate * record.units))
    return found


def print_status(params: Params) -> list[Billed]:
    from rich.table import Table

    up = billed(params)
    if not up:
        out.print("nothing deployed: nothing billed by the hour")
        return up
    table = Table("service", "dataset", "n", "resource", "up since", "hours", "USD/hour",
                  "USD so far", title="Deployed now (billed by the hour)")
    for b in up:
        table.add_row(b.service, b.dataset, str(b.ablation), b.resource, b.since,
                      f"{b.hours:.2f}", "?" if b.per_hour is None else f"{b.per_hour:.2f}",
                      "?" if b.so_far is None else f"{b.so_far:.2f}")
    out.print(table)
    out.print("stop them: `mlbench teardown` (this run's), or `mlbench <service> --help`")
    return up
