"""`mlbench vertex status|deploy|undeploy`: see and stop the billing of deployed models.

A deployed AutoML model is billed per node hour while it sits on an endpoint, benchmark or not:
`undeploy` stops that for what mlbench deployed (the endpoint is kept: it costs nothing; a model
deployed by hand on a hand-given endpoint is left alone), `deploy` brings the same trained model
back (`evaluate`/`load` deploy it themselves when needed). No SDK import here.
"""

from mlbench.services.commands import vendor_cli

cli = vendor_cli("vertex", "Google Vertex AI: status, undeploy (stop paying), deploy again.",
                 deploy="deploy", teardown="undeploy")
