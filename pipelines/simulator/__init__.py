"""The transaction simulator: a synthetic crypto exchange with users, prices, balances and fraud."""
