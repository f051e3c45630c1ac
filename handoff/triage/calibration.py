"""Thresholds that follow a target share of traffic: plain functions over assessments.

:func:`fit` takes the assessments of a calibration set (customer messages scored with the live
model, each alone, see ``docs/triage.md``) and returns the lowest review and human thresholds at
which the messages the *score* sends to review or further stay within ``shares.review`` and
those it sends to a person within ``shares.human`` of the set, never below the fixed thresholds
(the floors: a good model is not pushed to hold more than it needs). Messages a policy rule or an
explicit request for a person decide are counted in the set but never move a threshold (they do
not go through thresholds). Fewer than ``min_messages`` messages: the floors are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from handoff.triage.scoring import (
    ACTIONS,
    OUT_OF_SCOPE_INTENT,
    PERSON_REASONS,
    Assessment,
    Thresholds,
)

MODES: Final = ("fixed", "fitted")


@dataclass(frozen=True)
class Shares:
    """The most of the traffic triage should send to review (or further) and to a person."""

    review: float = 0.15
    human: float = 0.05

    def __post_init__(self) -> None:
        for name in ("review", "human"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"share {name} must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class Calibration:
    """The outcome of one fit: the thresholds, and the shares they give on the set."""

    thresholds: Thresholds
    fitted: bool  # False: too few messages, the floors were kept
    messages: int
    review_share: float  # share of the set sent to review (or further) by score or rule
    human_share: float  # share of the set sent to a person

    def to_json(self) -> dict[str, Any]:
        return {"review_threshold": self.thresholds.review,
                "human_threshold": self.thresholds.human, "fitted": self.fitted,
                "messages": self.messages, "review_share": round(self.review_share, 4),
                "human_share": round(self.human_share, 4)}


def _forced(assessment: Assessment) -> str:
    """The action rules or an explicit request impose, whatever the thresholds."""
    forced = "none"
    for reason in assessment.reasons:
        if reason.code == "human_request" or (reason.code.startswith("rule:")
                                              and reason.contribution >= 1.0):
            forced = "human"
        elif reason.code.startswith("rule:"):
            forced = max(forced, "review", key=ACTIONS.index)
    return forced


def _eligible(assessment: Assessment) -> tuple[bool, bool]:
    """(may the score send it to review, may the score send it to a person)."""
    person = any(r.code in PERSON_REASONS for r in assessment.reasons)
    in_scope = assessment.measures.get("intent") != OUT_OF_SCOPE_INTENT
    return in_scope or person, person


def route(assessment: Assessment, thresholds: Thresholds) -> str:
    """The action ``assessment`` gets at ``thresholds`` (as :func:`~.scoring.assess` decides)."""
    reviewable, person = _eligible(assessment)
    risk = assessment.risk
    by_score = ("human" if person and risk >= thresholds.human else
                "review" if reviewable and risk >= thresholds.review else "none")
    return max(_forced(assessment), by_score, key=ACTIONS.index)


def threshold_for(risks: Sequence[float], total: int, share: float, floor: float) -> float:
    """The lowest threshold (4 decimals, at most 1) at which at most ``share`` of ``total``
    messages have one of ``risks`` at or above it; never below ``floor``."""
    ranked = sorted(risks, reverse=True)
    allowed = int(share * total + 1e-9)
    if len(ranked) <= allowed:
        return floor
    return max(floor, min(1.0, round(ranked[allowed] + 1e-4, 4)))  # ties stay below


def fit(assessments: Sequence[Assessment], floors: Thresholds, shares: Shares = Shares(),
        min_messages: int = 100) -> Calibration:
    """The thresholds that meet ``shares`` on ``assessments`` (see the module docstring)."""
    total = len(assessments)
    if total < min_messages or total == 0:
        thresholds, fitted = floors, False
    else:
        free = [a for a in assessments if _forced(a) == "none"]
        reviewable = [a.risk for a in free if _eligible(a)[0]]
        personal = [a.risk for a in free if _eligible(a)[1]]
        thresholds = Thresholds(
            review=threshold_for(reviewable, total, shares.review, floors.review),
            human=threshold_for(personal, total, shares.human, floors.human))
        fitted = True
    actions = [route(a, thresholds) for a in assessments]
    return Calibration(thresholds, fitted, total,
                       sum(a != "none" for a in actions) / max(1, total),
                       sum(a == "human" for a in actions) / max(1, total))
