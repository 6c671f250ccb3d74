"""Hugging Face: a model served by a dedicated Inference Endpoint (see docs/services/huggingface.md)."""
