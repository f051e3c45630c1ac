"""The web wing: the gateway's faces. ``create_app`` wires the store, the conversation and
learning wings to HTTP routes and Socket.IO handlers; the notifier is the only module that
emits on a socket. Nothing below imports it (``tests/test_layers.py``).
"""
