"""The Feast feature repository: entities, sources, feature views and the `fraud_detection_v1` service."""
