"""Accepted agent corrections turned into Rasa training data, validated, and written atomically.

``python -m bot.corrections write --input corrections.json`` (in the Rasa environment); see
docs/corrections.md. Modules: :mod:`records` (the input), :mod:`masking` (PII),
:mod:`project` (what the project holds, where generated files go), :mod:`convert` (each
correction type → Rasa data), :mod:`domain_edit` (policy changes in domain.yml), :mod:`gate`
(validator, rule check, training) and :mod:`writer` (staging, atomic replacement, report).
"""
