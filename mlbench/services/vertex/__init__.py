"""`vertex`: Google Vertex AI AutoML image classification, by API only.

Automatic: the Cloud Storage upload (MD5-checked), the dataset and its import, the training
pipeline, the endpoint and the deployment, each created once and found again after a crash;
`mlbench vertex undeploy` stops the billing. Layout as every service: `settings.py` (the
`vertex:` block), `api.py` (the `aiplatform_v1` clients), `service.py` (the lifecycle), `cli.py`,
`export.py` (the import files), plus `gcs.py` and `labels.py`. See docs/services/vertex.md.
"""
