"""The training Job: the pinned script kept in the project (`job/train.py`) and how it runs.

The Job runs `uv run` on `job/train.py` in Astral's uv image (what `huggingface_hub.run_uv_job`
uses); `uv` installs the exact versions the script's inline metadata pins (PEP 723). The script
travels in the Job's environment (`MLBENCH_TRAIN_PY`) rather than through `run_uv_job`'s upload
of a local script (that goes to a Jobs artifacts bucket through Xet storage), so the Job needs
nothing but the Hub: the token is a Job *secret*, the dataset is read at the revision the upload
ended on, and the model is pushed to the private repo mlbench created for it. The script's
digest is part of the model's identity: editing it (or its pins) trains anew.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from mlbench.errors import UserError

SCRIPT = Path(__file__).with_name("job") / "train.py"
#: Debian with Python 3.12 and uv (huggingface_hub's DEFAULT_UV_IMAGE, named here so that a
#: new huggingface_hub does not silently change what trains).
IMAGE = "ghcr.io/astral-sh/uv:python3.12-bookworm"
ENV_SCRIPT = "MLBENCH_TRAIN_PY"
#: Write the script out of the environment, then let uv install its pins and run it.
LAUNCH = f'printf "%s" "${ENV_SCRIPT}" > /tmp/train.py && exec uv run /tmp/train.py "$@"'
_METADATA = re.compile(r"^# /// script\s*$(?P<body>.*?)^# ///\s*$", re.MULTILINE | re.DOTALL)
_PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][A-Za-z0-9.+!-]*")


@cache
def script_text() -> str:
    try:
        return SCRIPT.read_text()
    except OSError as exc:  # a broken install: the package data was not shipped
        raise UserError(f"{SCRIPT}: the training script is missing ({exc.strerror}); "
                        "reinstall mlbench") from None


def script_sha() -> str:
    return hashlib.sha256(script_text().encode()).hexdigest()[:16]


def script_metadata(text: str | None = None) -> dict[str, Any]:
    """The script's PEP 723 block (`# /// script` ... `# ///`), parsed as TOML."""
    match = _METADATA.search(script_text() if text is None else text)
    if match is None:
        raise ValueError("no `# /// script` metadata block")
    body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                     for line in match["body"].splitlines())
    return tomllib.loads(body)


def pins(text: str | None = None) -> list[str]:
    """The dependencies, each checked to be an exact `name==version` (what makes it pinned)."""
    deps = script_metadata(text).get("dependencies") or []
    loose = [d for d in deps if not _PIN.fullmatch(d)]
    if loose or not deps:
        raise ValueError(f"not pinned exactly: {loose or 'no dependencies'}")
    return list(deps)


def job_spec(*, dataset_repo: str, revision: str, model_repo: str, base_model: str,
             epochs: int, learning_rate: float, batch_size: int, seed: int, flavor: str,
             timeout: float, token: str) -> dict[str, Any]:
    """The keyword arguments of `HfApi.run_job` for one training (labels and namespace apart)."""
    args = ["--dataset", dataset_repo, "--revision", revision, "--base-model", base_model,
            "--model-repo", model_repo, "--epochs", str(epochs),
            "--learning-rate", repr(learning_rate), "--batch-size", str(batch_size),
            "--seed", str(seed)]
    return {
        "image": IMAGE,
        "command": ["bash", "-c", LAUNCH, "mlbench-train", *args],
        "env": {ENV_SCRIPT: script_text(), "PYTHONUNBUFFERED": "1"},
        "secrets": {"HF_TOKEN": token},
        "flavor": flavor,
        "timeout": int(timeout),
    }
