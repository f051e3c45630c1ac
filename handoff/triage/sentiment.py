"""Sentiment of a customer message and its trend over the conversation.

VADER (the ``vaderSentiment`` package: a lexicon and rules tuned for short social-media text,
about 20 µs a message, no model) gives each message a compound score from -1 (very negative)
to +1. The trend compares the message with the ones before it, so a customer who gets angrier
turn by turn is noticed before any single message is very negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

TREND_WINDOW: Final = 3  # the trend compares with the mean of this many previous messages


class Sentiment:
    """VADER's compound score; thread-safe (the analyser only reads its lexicon)."""

    def __init__(self) -> None:
        self._analyser = SentimentIntensityAnalyzer()

    def score(self, text: str) -> float:
        """-1 (very negative) … +1 (very positive); 0 for neutral text."""
        return float(self._analyser.polarity_scores(text)["compound"])


def trend(previous: Sequence[float], current: float) -> float:
    """``current`` minus the mean of the last :data:`TREND_WINDOW` earlier scores (0 when
    there are none): negative when the conversation is getting worse."""
    window = list(previous)[-TREND_WINDOW:]
    if not window:
        return 0.0
    return current - sum(window) / len(window)
