"""models of crypto-fraud-detection."""
