"""Hugging Face: an image classifier trained in the AutoTrain UI, served by a dedicated Inference
Endpoint.

Training is the one manual part: `mlbench export` writes AutoTrain's zips, the user trains and
deploys, then names the endpoint in params.yaml (`huggingface.endpoints.<dataset>.<ablation>`).
Checking the endpoint, scoring the test set and the load test are automatic. Layout as every
service: `settings.py` (the `huggingface:` block), `api.py` (the endpoint and Hub wire),
`service.py` (the lifecycle), `cli.py` (`mlbench huggingface status`), `export.py` (the seed's
files). See docs/services/huggingface.md.
"""
