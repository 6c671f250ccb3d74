"""`azureml`: Azure Machine Learning AutoML for images (image classification), by API only.

Automatic: the images to the workspace's blob datastore (MD5-checked), two MLTable data
assets, the AutoML job on a GPU cluster (its name recorded before it is sent, so a rerun
re-attaches), the best model registered, a managed online endpoint and its deployment;
`mlbench azureml delete` stops the billing. Layout as every service: `settings.py` (the
`azureml:` block), `api.py` (the REST calls), `service.py` (the lifecycle), `cli.py`,
`export.py` (the seed's files, the MLTables), plus `blob.py` (the uploads).
See docs/services/azureml.md.
"""
