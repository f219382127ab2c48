"""data_quality of crypto-fraud-detection."""
