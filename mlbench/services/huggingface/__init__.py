"""Hugging Face: an image classifier fine-tuned by a Hub Job, served by an Inference Endpoint.

Automatic end to end through `huggingface_hub`: the ablation's images go to a private dataset
repo, a Job on `huggingface.flavor` runs the pinned script `job/train.py` (a pretrained
backbone, `huggingface.base_model`, fine-tuned) which pushes the model to a private model repo;
`evaluate`/`load` create (or resume) an Inference Endpoint for it, and the pipeline's `teardown`
stage pauses it. An endpoint made by hand can be named instead
(`huggingface.endpoints.<dataset>.<ablation>`). Layout as every service, plus `hub.py` (repos,
Jobs, endpoints), `names.py` (what each resource is called) and `training.py` (the Job's spec).
See docs/services/huggingface.md.
"""
