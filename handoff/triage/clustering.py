"""Emerging needs: groups of recent customer messages the assistant handles badly.

The gateway collects recent customer messages whose assessment says the assistant did not
understand them well (:func:`is_candidate`: low confidence, a fallback, or far from the
training data); :func:`cluster_messages` groups them by meaning with scikit-learn's
agglomerative clustering (average linkage over cosine distance, cut at a distance rather than
at a number of clusters, so the number of needs is found, not chosen) and proposes for each
group the existing intent whose training examples' centroid is nearest, or ``new`` when none is
near enough. The trainer page shows the groups; accepting one turns its examples into NLU
examples through the corrections pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from handoff.triage.encoder import Vectors
from handoff.triage.index import EmbeddingIndex
from handoff.triage.scoring import Assessment

CANDIDATE_REASONS: Final = frozenset(
    {"low_confidence", "ambiguous", "novel", "novel_for_intent", "repeated_fallback"})
NEW_INTENT: Final = "new"


@dataclass(frozen=True)
class Cluster:
    size: int
    examples: tuple[str, ...]  # the members nearest the cluster's centre first (at most 10)
    proposed_intent: str  # an existing intent, or "new"
    similarity: float  # cosine similarity of the centre to that intent's centroid
    members: tuple[int, ...]  # positions of the members in the messages given

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "examples": list(self.examples),
                "proposed_intent": self.proposed_intent, "similarity": self.similarity,
                "members": list(self.members)}


def is_candidate(assessment: Assessment) -> bool:
    """Whether a message belongs on the emerging-needs page: the assistant was unsure of it
    or it is unlike the training data."""
    return any(r.code in CANDIDATE_REASONS for r in assessment.reasons)


def cluster_messages(texts: Sequence[str], vectors: Vectors, index: EmbeddingIndex, *,
                     max_distance: float = 0.6, min_size: int = 2,
                     new_below: float = 0.6) -> list[Cluster]:
    """Groups of at least ``min_size`` messages whose average cosine distance to each other
    stays under ``max_distance``, largest first. Each group's proposed intent is the one whose
    centroid is most similar to the group's centre, or ``new`` below ``new_below``."""
    if len(texts) != len(vectors):
        raise ValueError("one vector per text")
    if len(texts) < max(2, min_size):
        return []
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=max_distance,
    ).fit_predict(vectors)
    clusters: list[Cluster] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < min_size:
            continue
        centre = vectors[members].mean(axis=0)
        centre = centre / max(float(np.linalg.norm(centre)), 1e-12)
        closeness = vectors[members] @ centre
        ordered = members[np.argsort(-closeness)]
        intent, similarity = index.nearest_intents(centre.astype(np.float32))[0]
        clusters.append(Cluster(
            size=len(members),
            examples=tuple(texts[i] for i in ordered[:10]),
            proposed_intent=intent if similarity >= new_below else NEW_INTENT,
            similarity=round(similarity, 4),
            members=tuple(int(i) for i in ordered),
        ))
    clusters.sort(key=lambda c: (-c.size, c.members[0]))
    return clusters
