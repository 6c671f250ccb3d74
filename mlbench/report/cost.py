"""What a run cost, from what it recorded and the `prices:` block of params.yaml.

Each run records its training hours (what the vendor bills, where it says: Vertex's node hours,
Rekognition's billable seconds; else the wall time), its deployed hours (`results/deployments/`)
and its calls (the test set, the single-stream pass, the load test). With a service's
`prices.<service>` (`training_hour`, `deployed_hour`, `per_1000_calls`, USD) that gives:

- `cost_training_usd`: the price of the trained model;
- `cost_deployed_usd`: what this run's deployment cost while it was up (hours times the billed
  units it ran on: nodes, inference units, instances);
- `cost_per_1000_usd`: the price of 1,000 predictions with the endpoint kept busy at the
  throughput the load test measured (its units' hour spread over the calls it answers in an hour)
  plus any per-call price: what a user serving traffic pays, whatever this run's schedule.

A price that params.yaml does not give leaves its figure empty, never zero.
"""

from __future__ import annotations

import math
from typing import Any

from mlbench import paths
from mlbench.core import ModelRef
from mlbench.services.cloud import Deployment

COLUMNS = ("training_hours", "deployed_hours", "calls", "cost_training_usd",
           "cost_deployed_usd", "cost_per_1000_usd")


def training_hours(model: ModelRef | None) -> float | None:
    if model is None:
        return None
    billed = model.details.get("billable_training_hours")
    if isinstance(billed, int | float):
        return float(billed)
    return model.train_seconds / 3600 if model.train_seconds is not None else None


def run_cost(service: str, ds: str, n: int, prices: dict[str, float], calls: int,
             throughput_rps: float | None) -> dict[str, Any]:
    """The cost columns of one run (None where a price or a measurement is missing)."""
    hours = training_hours(ModelRef.load(paths.model_json(service, ds, n)))
    path = paths.deployment_file(service, ds, n)
    record = Deployment(path) if path.exists() else None
    deployed = record.seconds_up() / 3600 if record else 0.0
    unit_hours = record.unit_seconds() / 3600 if record else 0.0
    units = record.units if record else 1

    def times(amount: float | None, key: str) -> float | None:
        price = prices.get(key)
        return None if amount is None or price is None else amount * price

    per_1000 = None
    per_call, per_hour = prices.get("per_1000_calls"), prices.get("deployed_hour")
    busy = throughput_rps if throughput_rps and math.isfinite(throughput_rps) else None
    if per_call is not None or (per_hour is not None and busy):
        per_1000 = (per_call or 0.0) + (per_hour * units * 1000 / (3600 * busy)
                                        if per_hour and busy else 0.0)
    return {"training_hours": hours, "deployed_hours": deployed, "calls": calls,
            "cost_training_usd": times(hours, "training_hour"),
            "cost_deployed_usd": times(unit_hours, "deployed_hour"),
            "cost_per_1000_usd": per_1000}
