"""Triage and agent assist: how risky is a customer message, and what could an agent reply.

The gateway's entry points (see ``docs/triage.md``)::

    from handoff.triage import Message, Triage, TriageConfig, TriageWorker, History

    worker = await TriageWorker.load(TriageConfig.from_settings(settings))  # loads on a thread
    assessment, history = await worker.assess(Message.from_parse(text, parse), history)
    suggestions = await worker.suggest([..., last_customer_text], k=3)
    await worker.add_reply(text, f"agent:{agent}", context=customer_text)
    clusters = await worker.emerging_needs(recent_unclear_texts)
    await worker.rebuild(config, reload_model=True)   # after new data or a new model
    await worker.close()

Modules, one concept each: ``encoder`` (the model seam), ``corpus`` (Rasa YAML), ``index``
(embeddings and nearest neighbours), ``sentiment``, ``rules`` (the trainers' YAML file),
``scoring`` (pure risk score), ``clustering`` (emerging needs), ``engine`` (the synchronous
whole) and ``worker`` (the async façade).
"""

from handoff.triage.clustering import Cluster, is_candidate
from handoff.triage.corpus import Corpus, CorpusError, read_corpus
from handoff.triage.encoder import Encoder, EncoderError, load_encoder
from handoff.triage.engine import Message, Triage, TriageConfig
from handoff.triage.index import EmbeddingIndex, Suggestion
from handoff.triage.rules import RulesError, load_rules
from handoff.triage.scoring import (
    Assessment,
    History,
    Reason,
    Signals,
    Thresholds,
    assess,
)
from handoff.triage.worker import TriageWorker

__all__ = [
    "Assessment", "Cluster", "Corpus", "CorpusError", "EmbeddingIndex", "Encoder",
    "EncoderError", "History", "Message", "Reason", "RulesError", "Signals", "Suggestion",
    "Thresholds", "Triage", "TriageConfig", "TriageWorker", "assess", "is_candidate",
    "load_encoder", "load_rules", "read_corpus",
]
