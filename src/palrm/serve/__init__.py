"""`palrm serve`: the HTTP reward service (FastAPI + uvicorn), micro-batched, with a durable SQLite user store.

Importing this package does not import FastAPI; use `palrm.serve.app.create_app` and
`palrm.serve.engine.RewardEngine` (install the extra: `pip install palrm[serve]`).
"""
