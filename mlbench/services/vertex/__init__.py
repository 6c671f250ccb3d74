"""Google Vertex AI AutoML image classification (see docs/services/vertex.md)."""
