"""The real-time scoring API (`fraud serve`)."""
