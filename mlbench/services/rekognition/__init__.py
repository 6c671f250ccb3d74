"""`rekognition`: AWS Rekognition Custom Labels, the seed's console steps driven by the API.

Automatic: the S3 upload (images + Ground Truth manifests, only what changed), the project and
its TRAIN/TEST datasets, the training, starting the model when `evaluate`/`load` need it and
stopping it again in the pipeline's `teardown` stage (a running model is billed per
inference-unit hour; `mlbench rekognition start|stop` by hand). Not automatic: deleting projects
or S3 objects. Layout as every service: `settings.py`, `api.py` (boto3 clients through the retry
policy), `service.py`, `cli.py`, `export.py` (S3 keys and manifests), `s3.py` (the uploads).
Docs: docs/services/rekognition.md.
"""
