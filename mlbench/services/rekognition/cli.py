"""`mlbench rekognition status|start|stop`: a running model is billed per inference-unit hour
until stopped, so these work on every model the project recorded (model.json, or the state a
crashed run left) or was given (`rekognition.endpoints`). `stop` stops what mlbench started or
trained; a hand-given model the user had running is left running."""

from __future__ import annotations

from mlbench.services.commands import vendor_cli

cli = vendor_cli("rekognition", "AWS Rekognition Custom Labels models: status, start, stop (a "
                 "running model is billed per inference-unit hour until stopped).",
                 deploy="start", teardown="stop")
