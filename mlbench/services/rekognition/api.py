"""The AWS side of the Rekognition service: one boto3 session, its two clients, and the one way
to call them.

Credentials come only from boto3's standard chain (env vars, shared files, SSO, instance roles);
nothing here reads or stores a secret. Endpoints follow boto3's own rules (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_REKOGNITION`) unless `rekognition.endpoint_url` /
`rekognition.s3_endpoint_url` are set, which win: that is how the tests point S3 at moto and
Rekognition at the local fake.

botocore's own retries are switched off (one attempt per call) for every client: each call goes
through the project's `RetryPolicy`, so throttling, 5xx answers and dropped connections are
retried the same way as for every other vendor, and a prediction counts its attempts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoAuthTokenError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    TokenRetrievalError,
    UnknownCredentialError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from mlbench.errors import ServiceCallError, UserError
from mlbench.redact import remember
from mlbench.retry import RetryLater, RetryPolicy
from mlbench.services.rekognition.settings import VERSION_ARN_RE, Settings

#: Error codes worth another attempt (throttling, transient trouble), besides any 5xx.
RETRY_CODES = frozenset({
    "ThrottlingException", "ProvisionedThroughputExceededException", "LimitExceededException",
    "InternalServerError", "InternalError", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException", "SlowDown",
})
#: Codes that mean the credentials were refused: the user must fix them, no retry helps.
REFUSED_CODES = frozenset({
    "UnrecognizedClientException", "InvalidSignatureException", "SignatureDoesNotMatch",
    "InvalidAccessKeyId", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
    "MissingAuthenticationTokenException",
})
#: Codes that mean valid credentials are not allowed this operation (IAM policy).
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException"})
NO_CREDENTIALS = ("no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                  "(or AWS_PROFILE)")
#: A quota of the account is used up: the user asks AWS for more (or frees some).
QUOTA_CODES = frozenset({"ServiceQuotaExceededException"})


class AccessDenied(UserError):
    """Valid credentials, not allowed this operation: a caller that can do without it (a status
    check) goes on; anywhere else it is one line saying which permission to grant."""

    def __init__(self, message: str, operation: str):
        super().__init__(message)
        self.operation = operation


class AwsCallError(ServiceCallError):
    """A call AWS refused for good, with its error code (to tell "already exists" apart)."""

    def __init__(self, message: str, code: str, status: int | None, attempts: int):
        super().__init__(message, status, attempts)
        self.code = code


def judge(exc: Exception, what: str, attempt: int) -> Exception:
    """The error to raise for a failed attempt: RetryLater, UserError or AwsCallError.

    Every AWS error is one line; only a request botocore refuses to build (ParamValidationError,
    a bug here) keeps its traceback."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return RetryLater(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, NoCredentialsError):
        return UserError(NO_CREDENTIALS)
    if isinstance(exc, PartialCredentialsError | CredentialRetrievalError
                  | UnknownCredentialError | NoAuthTokenError | TokenRetrievalError):
        return UserError(f"AWS credentials unusable for {what} ({exc}); fix AWS_ACCESS_KEY_ID / "
                         "AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    if isinstance(exc, ParamValidationError):
        return exc  # a bug (bad parameters): keep the traceback
    if not isinstance(exc, ClientError):  # an answer botocore could not read, say
        return AwsCallError(f"{what}: {type(exc).__name__}: {exc}", type(exc).__name__, None,
                            attempt)
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", "")) or str(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    why = f"{code}: {message}"
    if code in RETRY_CODES or (status is not None and status >= 500):
        return RetryLater(why, status=status)
    if code in REFUSED_CODES:
        return UserError(f"AWS refused {what} ({why}); check the credentials "
                         "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and their permissions")
    if code in DENIED_CODES:
        return AccessDenied(f"AWS denied {what} ({why}); allow it in the IAM policy of these "
                            "credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE)", what)
    if code in QUOTA_CODES:
        return UserError(f"an AWS quota is used up ({what}: {why}); ask for an increase in the "
                         "Service Quotas console or free some of it")
    return AwsCallError(f"{what}: {why}", code, status, attempt)


class Api:
    """A boto3 session checked for credentials and region, and its S3 and Rekognition clients.

    `s3(op, **kw)` and `rek(op, **kw)` call an operation through the retry policy; `counted`
    also returns how many attempts it took.
    """

    def __init__(self, settings: Settings, pool_size: int = 10):
        session = boto3.session.Session(region_name=settings.region)
        credentials = session.get_credentials()
        if credentials is None:
            raise UserError(NO_CREDENTIALS)
        if not isinstance(credentials, RefreshableCredentials):  # (no refresh call here)
            # maybe from a shared credentials file, not the environment: scrub them from errors
            remember(credentials.secret_key, credentials.token)
        if not session.region_name:
            raise UserError("no AWS region set; set AWS_DEFAULT_REGION (or rekognition.region "
                            "in params.yaml) to a region with Rekognition Custom Labels")
        self.region: str = session.region_name
        self.policy = RetryPolicy(max_attempts=settings.max_attempts,
                                  base_delay=settings.backoff_seconds)
        config = Config(retries={"mode": "standard", "total_max_attempts": 1},
                        max_pool_connections=pool_size, connect_timeout=10,
                        read_timeout=self.policy.timeout)
        self.s3_client = session.client("s3", endpoint_url=settings.s3_endpoint_url,
                                        config=config)
        self.rek_client = session.client("rekognition", endpoint_url=settings.endpoint_url,
                                         config=config)

    @property
    def identity(self) -> dict[str, str]:
        """Where the resources live: a record made against another region or endpoint (a
        fake, say) is not reused."""
        return {"region": self.region, "endpoint": self.rek_client.meta.endpoint_url}

    def counted(self, client: Any, op: str, **kwargs: Any) -> tuple[Any, int]:
        """`client.<op>(**kwargs)` through the retry policy; (answer, attempts)."""
        method: Callable[..., Any] = getattr(client, op)
        what = f"{client.meta.service_model.service_name} {op}"
        tries = [0]

        def attempt(n: int) -> Any:
            tries[0] = n
            try:
                return method(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise judge(exc, what, n) from None
            except (ResponseParserError, ValueError) as exc:
                # botocore could not parse the answer (it raises these bare, not as
                # BotoCoreError): a server speaking S3 or Rekognition wrongly, not a retry case
                raise AwsCallError(f"{what}: unreadable answer ({type(exc).__name__}: {exc}); "
                                   "check the endpoint (rekognition.endpoint_url / "
                                   "s3_endpoint_url)", "ResponseParserError", None, n) from None

        return self.policy.call(attempt, what), tries[0]

    def s3(self, op: str, **kwargs: Any) -> Any:
        return self.counted(self.s3_client, op, **kwargs)[0]

    def rek(self, op: str, **kwargs: Any) -> Any:
        return self.counted(self.rek_client, op, **kwargs)[0]

    # -- Rekognition lookups ---------------------------------------------------------------------
    def find_project(self, name: str) -> dict[str, Any] | None:
        """The project called `name` (with its datasets), or None."""
        answer = self.rek("describe_projects", ProjectNames=[name])
        return next((p for p in answer.get("ProjectDescriptions", [])
                     if project_name(p["ProjectArn"]) == name), None)

    def project_of(self, version_arn: str) -> str:
        """The project ARN of a version ARN (which names its project, not the project's id)."""
        name = version_parts(version_arn)[0]
        project = self.find_project(name)
        if project is None:
            raise UserError(f"rekognition: project {name} of model {version_arn} not found in "
                            f"this account/region ({self.region}); check the region and the ARN")
        return project["ProjectArn"]

    def versions(self, project_arn: str) -> list[dict[str, Any]]:
        """Every version of a project, oldest first."""
        found: list[dict[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = self.rek("describe_project_versions", ProjectArn=project_arn, MaxResults=100,
                            **token)
            found += page.get("ProjectVersionDescriptions", [])
            if not page.get("NextToken"):
                return sorted(found, key=lambda v: v["CreationTimestamp"])
            token = {"NextToken": page["NextToken"]}

    def version(self, project_arn: str, version_arn: str) -> dict[str, Any]:
        """The description of one model (status, timestamps, evaluation)."""
        answer = self.rek("describe_project_versions", ProjectArn=project_arn,
                          VersionNames=[version_parts(version_arn)[1]])
        for desc in answer.get("ProjectVersionDescriptions", []):
            if desc["ProjectVersionArn"] == version_arn:
                return desc
        raise UserError(f"rekognition: model {version_arn} not found in project {project_arn}; "
                        "was it deleted? Remove its model.json (or its rekognition.endpoints "
                        "entry) and rerun")

    def close(self) -> None:
        self.s3_client.close()
        self.rek_client.close()


def project_name(project_arn: str) -> str:
    """`arn:...:project/<name>/<n>` -> `<name>`."""
    return project_arn.split(":project/", 1)[-1].split("/", 1)[0]


def version_parts(version_arn: str) -> tuple[str, str]:
    """(project name, version name) of a project version ARN."""
    match = VERSION_ARN_RE.match(version_arn)
    if not match:
        raise UserError(f"{version_arn!r} is not a Rekognition project version ARN")
    return match.group(3), match.group(4)
