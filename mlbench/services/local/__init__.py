"""`local`: the built-in baseline (frozen image features + a linear head), served on 127.0.0.1.

Needs no credentials and no network. Layout as every service: `settings.py` (the `local:` block),
`service.py` (the lifecycle), `cli.py` (`mlbench local serve`), plus the model's own parts:
`features.py` (extractors and their cache), `head.py`, `model.py` (the file on disk) and
`server.py` (the HTTP server process).
"""
