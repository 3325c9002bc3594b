"""The orchestration service: a REST API over the agent team, its client, and its reports.

`api_server.py` serves `app.create_app(...)`; `client.OrchestratorClient` talks to it.
"""
