"""A local fake of Azure Machine Learning's REST API (workspace, datastores, MLTable data
assets, AutoML image jobs and their MLflow runs, models, managed online endpoints and
deployments, the scoring URI) and of App Service's managed-identity token endpoint; Blob
storage is Azurite, which the fake reads the MLTables and images back from.

    with AzureMLFake(AzureMLState(SUB, RG, WS, blob_reader=read_from_azurite)) as fake:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{fake.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", fake.state.identity_header)
        params: azureml.arm_endpoint = azureml.tracking_endpoint = fake.url
        ...
        fake.state.created                 # how many jobs/models/endpoints/... were made
"""

from tests.fakes.azureml.models import AZURITE_ACCOUNT, AZURITE_KEY, ApiFailure, AzureMLState
from tests.fakes.azureml.responses import AzureMLFake
from tests.fakes.http_base import Fault

__all__ = ["AZURITE_ACCOUNT", "AZURITE_KEY", "ApiFailure", "AzureMLFake", "AzureMLState",
           "Fault"]
