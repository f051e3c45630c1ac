"""The conversation wing: what flows from a customer's message to the reply they see.

The pure router (:mod:`.router`, its vocabulary in :mod:`.router_model`, the state codec), the
I/O shell that runs it (:mod:`.shell`), the Rasa seam (:mod:`.rasa_client`), the customer
protocol's codec, the per-conversation locks and the link to triage. It imports nothing from
the learning or web wings (``tests/test_layers.py``).
"""
