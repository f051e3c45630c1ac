"""Custom NLU components of the assistant (loaded by Rasa from ``config.yml``)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Set, Text

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.constants import TOKENS_NAMES
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
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

VOCABULARY_FILE = "vocabulary.json"


def _words(message: Message) -> List[Text]:
    """The lower-cased tokens of a message that contain a letter."""
    tokens = message.get(TOKENS_NAMES[TEXT]) or []
    return [t.text.lower() for t in tokens if any(c.isalpha() for c in t.text)]


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True
)
class UnknownWordsFallback(GraphComponent):
    """Turns a message none of whose words occur in the training data into ``nlu_fallback``.

    A classifier on character n-grams gives random letters ("qwxz mmpf") a confident intent
    now and then; a message with no known word at all is not understood, whatever the score.
    Messages with an extracted entity (an order number, an e-mail address) are left alone.
    Place it after the tokenizer and the classifier.
    """

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {"confidence": 1.0}

    def __init__(
        self,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        vocabulary: Optional[Set[Text]] = None,
    ) -> None:
        self._config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self.vocabulary: Set[Text] = vocabulary or set()

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "UnknownWordsFallback":
        return cls(config, model_storage, resource)

    def train(self, training_data: TrainingData) -> Resource:
        self.vocabulary = {
            word for example in training_data.training_examples for word in _words(example)
        }
        with self._model_storage.write_to(self._resource) as directory:
            (directory / VOCABULARY_FILE).write_text(json.dumps(sorted(self.vocabulary)))
        return self._resource

    @classmethod
    def load(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> "UnknownWordsFallback":
        try:
            with model_storage.read_from(resource) as directory:
                vocabulary = set(json.loads((directory / VOCABULARY_FILE).read_text()))
        except ValueError:  # not trained (e.g. an NLU-less model): never falls back
            vocabulary = set()
        return cls(config, model_storage, resource, vocabulary)

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(self, messages: List[Message]) -> List[Message]:
        for message in messages:
            words = _words(message)
            if not self.vocabulary or not words or message.get(ENTITIES):
                continue
            if any(word in self.vocabulary for word in words):
                continue
            fallback = {
                INTENT_NAME_KEY: DEFAULT_NLU_FALLBACK_INTENT_NAME,
                PREDICTED_CONFIDENCE_KEY: self._config["confidence"],
            }
            message.set(INTENT, fallback, add_to_output=True)
            ranking = [r for r in message.get(INTENT_RANKING_KEY) or []
                       if r.get(INTENT_NAME_KEY) != DEFAULT_NLU_FALLBACK_INTENT_NAME]
            message.set(INTENT_RANKING_KEY, [fallback, *ranking], add_to_output=True)
        return messages
