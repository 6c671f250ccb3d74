"""`mlbench huggingface status`: the endpoint of every recorded or hand-given model.

No deploy/teardown commands: endpoints are made and paused by hand in the Hugging Face UI
until training and deployment are automated.
"""

from __future__ import annotations

from mlbench.services.commands import vendor_cli

cli = vendor_cli("huggingface", "Hugging Face Inference Endpoints: list the endpoint of every "
                 "recorded or hand-given model (made and paused by hand in the HF UI).")
