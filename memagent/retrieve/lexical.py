"""BM25 (Okapi) over one user's keys: the lexical half of hybrid search.

Each user has an index of their own, so a query can only ever score that user's records. An index
is rebuilt from the store when first needed and after any update or delete, so it can never
disagree with the store; adds extend it in place.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence

import numpy as np

from memagent._text import tokenize


class BM25Index:
    """k1 and b are the usual Okapi defaults (Robertson & Zaragoza 2009)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.ids: list[str] = []
        self.groups: list[str] = []  # the session each row belongs to ("" when not given)
        self.times: dict[str, float] = {}  # id -> conversation time (epoch seconds), when given
        self._lengths: list[int] = []
        self._norms: np.ndarray | None = None  # BM25's length normalisation per row, kept between queries
        self._postings: dict[str, list[tuple[int, int]]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # term -> (doc rows, term counts)
        self._group_rows: tuple[np.ndarray, np.ndarray] | None = None  # (group names, group of each row)
        self._members: dict[str, list[str]] | None = None  # group -> its ids, in the order added
        self._group_of: dict[str, str] | None = None  # id -> its group

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self, ids: Sequence[str], texts: Sequence[str], groups: Sequence[str] | None = None,
        times: Sequence[float] | None = None,
    ) -> None:
        """Index ``texts`` under ``ids``; ``groups`` (sessions) and ``times`` ride along for the read path."""
        self._group_rows = self._members = self._group_of = None
        self._norms = None
        if times is not None:
            self.times.update(zip(ids, times))
        for record_id, text, group in zip(ids, texts, groups or [""] * len(ids)):
            row = len(self.ids)
            counts = Counter(tokenize(text))
            self.ids.append(record_id)
            self.groups.append(group)
            self._lengths.append(sum(counts.values()))
            for term, count in counts.items():
                self._postings.setdefault(term, []).append((row, count))
                self._arrays.pop(term, None)

    def search(self, query: str, n: int, allowed: Collection[str] | None = None) -> list[tuple[str, float]]:
        """The ``n`` best ids with their scores; ``allowed`` restricts which ids may rank."""
        if not self.ids:
            return []
        norm = self._row_norms()
        scores = np.zeros(len(self.ids))
        for term in set(tokenize(query)):
            if term not in self._postings:
                continue
            rows, counts = self._term_arrays(term)
            # Lucene's idf: never negative, even for terms in most documents.
            idf = math.log(1 + (len(self.ids) - len(rows) + 0.5) / (len(rows) + 0.5))
            scores[rows] += idf * counts * (self.k1 + 1) / (counts + norm[rows])
        candidates = np.flatnonzero(scores > 0)
        if allowed is not None:
            candidates = np.array([r for r in candidates if self.ids[r] in allowed], dtype=np.int64)
        best = _best(candidates, scores[candidates], n)
        return [(self.ids[r], float(scores[r])) for r in best]

    def document_fraction(self, term: str) -> float:
        """The fraction of rows holding ``term`` (a token as ``tokenize`` gives it)."""
        return len(self._postings.get(term, ())) / len(self.ids) if self.ids else 0.0

    def _row_norms(self) -> np.ndarray:
        if self._norms is None:
            lengths = np.asarray(self._lengths, dtype=np.float64)
            self._norms = self.k1 * (1 - self.b + self.b * lengths / max(lengths.mean(), 1e-9))
        return self._norms

    def search_groups(self, query: str, n: int) -> list[tuple[str, float]]:
        """BM25 over groups (sessions), each scored as if its rows were one document; best ``n`` first.

        A session as a whole often matches a question that none of its rounds matches alone; the
        postings are summed per group at query time, so no second index has to be kept in step.
        """
        if not self.ids:
            return []
        names, of_row = self._groups_of_rows()
        lengths = np.bincount(of_row, weights=self._lengths, minlength=len(names))
        norm = self.k1 * (1 - self.b + self.b * lengths / max(lengths.mean(), 1e-9))
        scores = np.zeros(len(names))
        for term in set(tokenize(query)):
            if term not in self._postings:
                continue
            rows, counts = self._term_arrays(term)
            tf = np.bincount(of_row[rows], weights=counts, minlength=len(names))
            df = np.count_nonzero(tf)
            idf = math.log(1 + (len(names) - df + 0.5) / (df + 0.5))
            scores += idf * tf * (self.k1 + 1) / (tf + norm)
        matched = np.flatnonzero(scores > 0)
        return [(str(names[g]), float(scores[g])) for g in _best(matched, scores[matched], n)]

    def group_of(self) -> dict[str, str]:
        """Each id's group (rows added without groups share the group "")."""
        if self._group_of is None:
            self._group_of = dict(zip(self.ids, self.groups))
        return self._group_of

    def members(self) -> dict[str, list[str]]:
        """Each group's ids, in the order they were added."""
        if self._members is None:
            self._members = {}
            for record_id, group in zip(self.ids, self.groups):
                self._members.setdefault(group, []).append(record_id)
        return self._members

    def _groups_of_rows(self) -> tuple[np.ndarray, np.ndarray]:
        if self._group_rows is None:
            self._group_rows = np.unique(np.asarray(self.groups, dtype=object).astype(str), return_inverse=True)
        return self._group_rows

    def _term_arrays(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        if term not in self._arrays:
            postings = np.asarray(self._postings[term], dtype=np.int64)
            self._arrays[term] = (postings[:, 0], postings[:, 1].astype(np.float64))
        return self._arrays[term]


def _best(rows: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` rows of highest score, best first, ties in row order: a stable sort of all of them
    would give the same, but a partition first keeps a query over 100k rows to the few it returns."""
    if len(rows) > n > 0:
        cut = np.partition(scores, len(scores) - n)[len(scores) - n]  # the n-th highest score
        keep = scores >= cut  # every row tied with the n-th stays, so the stable sort below decides
        rows, scores = rows[keep], scores[keep]
    return rows[np.argsort(-scores, kind="stable")[:n]]


class LexicalIndexes:
    """One BM25 index per user, built from ``load(user_id) -> [(id, key, session_id, epoch seconds), ...]``
    when first needed.

    The store keeps a version token per user that every write changes; an index built at another
    version is rebuilt, so it follows other processes' writes (a folder's vector index follows them
    through the store's lock-file token, see store/chroma.py); a writer killed between its upsert and
    its version bump is seen at the user's next write.
    """

    def __init__(
        self, load: Callable[[str], Iterable[tuple[str, str, str, float]]], version: Callable[[str], str | None]
    ) -> None:
        self._load = load
        self._version = version
        self._by_user: dict[str, tuple[str | None, BM25Index]] = {}

    def for_user(self, user_id: str) -> BM25Index:
        current = self._version(user_id)
        cached = self._by_user.get(user_id)
        if cached is not None and cached[0] == current:
            return cached[1]
        index = BM25Index()
        rows = list(self._load(user_id))
        index.add([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
        self._by_user[user_id] = (current, index)
        return index

    def extend(self, user_id: str, ids: Sequence[str], keys: Sequence[str], sessions: Sequence[str],
               times: Sequence[float], before: str | None, after: str) -> None:
        """Our own add moved the user from version ``before`` to ``after``: extend the index in place
        when it was current, rather than rebuild it on the next search."""
        cached = self._by_user.get(user_id)
        if cached is not None and cached[0] == before:
            cached[1].add(ids, keys, sessions, times)
            self._by_user[user_id] = (after, cached[1])


def session_ranks(
    index: BM25Index, query: str, sessions: int, allowed: Collection[str] | None = None
) -> dict[str, int]:
    """Every round of the ``sessions`` best-matching sessions, ranked by its session's BM25 rank.

    Rounds of one session tie; fused with the round rankings this breaks ties by the rounds' own
    match, so a round rises when its whole session is about the question.
    """
    return _rounds_by_session([name for name, _ in index.search_groups(query, sessions)], index, allowed)


def sessions_of_ranking(
    index: BM25Index, ranking: Sequence[str], allowed: Collection[str] | None = None
) -> dict[str, int]:
    """A round ranking turned into a session ranking: sessions in the order their best round ranks,
    every round of a session at its session's rank.

    A session's vote then counts its best round alone, so a session holding one strong match ranks
    as well as one whose rounds all half-match. With stemming and the weights in ``RetrievalConfig``,
    these votes lifted the default's session recall_all@5 on LoCoMo from 0.566 to 0.717
    (evals/results/README.md).
    """
    session_of = index.group_of()
    order = dict.fromkeys(session_of[record] for record in ranking if record in session_of)
    return _rounds_by_session(list(order), index, allowed)


def _rounds_by_session(sessions: Sequence[str], index: BM25Index, allowed: Collection[str] | None) -> dict[str, int]:
    members = index.members()
    return {
        record: rank
        for rank, name in enumerate(sessions, start=1)
        for record in members.get(name, ())
        if allowed is None or record in allowed
    }
