"""`mlbench vertex status|deploy|undeploy`: see and stop the billing of deployed models.

A deployed AutoML model is billed per node hour while it sits on an endpoint, benchmark or not:
`undeploy` stops that (the endpoint is kept: it costs nothing), `deploy` brings the same trained
model back for another `evaluate`/`load`. No SDK import here.
"""

from mlbench.services.commands import vendor_cli

cli = vendor_cli("vertex", "Google Vertex AI: status, undeploy (stop paying), deploy again.",
                 deploy="deploy", teardown="undeploy")
