"""The learning wing: what flows from an agent's correction to a model in service.

The corrections' export and CLI, the supervisor client, retraining and blue/green deploys. It
may use the conversation wing and the store, never the web wing (``tests/test_layers.py``).
"""
