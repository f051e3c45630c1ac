"""The Rasa-side package (Python 3.10, the Rasa environment): starting the servers and, later,
turning agents' corrections into training data with Rasa's own readers, writers and validator."""
