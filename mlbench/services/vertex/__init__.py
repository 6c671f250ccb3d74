"""`vertex`: Google Vertex AI AutoML image classification, by API only.

Automatic: the Cloud Storage upload (MD5-checked), the dataset and its import, the training
pipeline (training stops at the model: nothing billed by the hour), then, when `evaluate` or
`load` first needs it, the endpoint and the deployment; the pipeline's `teardown` stage undeploys
it again (`mlbench vertex undeploy` by hand), and a crash never pays twice for any of them.
Layout as every service: `settings.py` (the `vertex:` block), `api.py` (the `aiplatform_v1`
clients), `service.py` (the lifecycle), `cli.py`, `export.py` (the import files), plus `gcs.py`
and `labels.py`. See docs/services/vertex.md.
"""
