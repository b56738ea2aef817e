"""Tee gateway: a reverse proxy in front of OpenAI-compatible servers that logs every finished
exchange to Kafka as inference-log/v1 without ever delaying or failing the user's request.

``settings`` (GatewaySettings, nested in Settings as ``gateway``), ``tee`` (queue, worker,
spill file), ``app`` (the ASGI proxy), ``server`` (uvicorn in a thread or in the foreground),
``cli`` (``misuse-monitor gateway``). Importing this package imports none of them.
"""
