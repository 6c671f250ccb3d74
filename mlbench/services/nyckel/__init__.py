"""`nyckel`: Nyckel's hosted image classification, driven entirely through its API.

Automatic: one function per dataset and ablation (found or created by a deterministic name),
its labels, the ablation's images as samples (resumable), the wait for Nyckel's own training,
and predictions with `capture=false`. Credentials: NYCKEL_CLIENT_ID / NYCKEL_CLIENT_SECRET
(NYCKEL_API_URL overrides the API base URL). Layout as every service: `settings.py`, `api.py`
(wire calls), `auth.py` (tokens), `service.py` (lifecycle), `cli.py` (`mlbench nyckel ...`),
`export.py` (seed files). See docs/services/nyckel.md.
"""
