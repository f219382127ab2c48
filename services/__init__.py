"""services of crypto-fraud-detection."""
