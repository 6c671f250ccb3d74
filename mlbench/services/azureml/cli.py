"""`mlbench azureml status|deploy|delete`: see and stop the billing of deployed models.

A managed online deployment is billed per instance hour while it exists, benchmark or not:
`delete` removes the deployments and the endpoint (`azureml.keep_endpoint` keeps the
endpoint; one given by hand is always kept), `deploy` brings the registered model back for
another `evaluate`/`load`. No SDK import here.
"""

from mlbench.services.commands import vendor_cli

cli = vendor_cli("azureml", "Azure ML AutoML for images: status, delete (stop paying), deploy "
                 "again.", deploy="deploy", teardown="delete")
