"""pipelines of crypto-fraud-detection."""
