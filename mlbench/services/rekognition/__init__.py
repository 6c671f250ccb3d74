"""AWS Rekognition Custom Labels (see docs/services/rekognition.md)."""
