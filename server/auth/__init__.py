"""Accounts and API tokens: who is calling, what they may do, and the FastAPI dependencies
that say so (aliases in ``server/api/deps.py``)."""
