"""The generated failure families: harmful rows next to harmless look-alikes, and a held-out slice that shares no
template with training (so its recall measures the intent learned, not the sentences)."""

from __future__ import annotations

import random
import re

from rwkv7_provider.guard.augment import augment
from rwkv7_provider.guard.families import FAMILIES, HOLDOUT_EVERY, TWINS, Family, family_examples, family_rows


def frame_pattern(frame: str) -> re.Pattern:
    """A regex that matches every sentence the frame can produce (any text in each slot)."""
    return re.compile("(.+)".join(re.escape(p) for p in re.split(r"\{\w+\}", frame)), re.IGNORECASE)


def test_heldout_rows_match_no_training_template() -> None:
    heldout = family_rows("heldout")
    assert {ex.source for ex in heldout} == {fam.source for fam in FAMILIES}
    for fam in FAMILIES:
        train_frames = [f for k, f in enumerate(fam.frames) if k % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
        patterns = [frame_pattern(f) for f in train_frames]
        rows = [ex for ex in heldout if ex.source == fam.source]
        assert len(rows) >= 30, fam.name
        for ex in rows:
            assert ex.label == fam.label
            assert not any(p.fullmatch(ex.text) for p in patterns), (fam.name, ex.text)
        # ... while every training row does come from a training template.
        for ex in family_examples(fam, "train", random.Random(0)):
            assert any(p.fullmatch(ex.text) for p in patterns), (fam.name, ex.text)


def test_training_never_sees_the_heldout_slice_and_the_slice_is_fixed() -> None:
    heldout = {ex.text for ex in family_rows("heldout")}
    for seed in (0, 1):
        generated = augment([], random.Random(seed), 0, 0)
        assert not heldout & {ex.text for ex in generated}
    assert [ex.text for ex in family_rows("heldout", seed=5)] == [ex.text for ex in family_rows("heldout", seed=0)]
    assert {ex.text for ex in family_rows("train", seed=0)} != {ex.text for ex in family_rows("train", seed=1)}


def test_every_harm_shares_its_words_with_harmless_rows() -> None:
    rows = family_rows("train") + family_rows("heldout")
    for subject in ("a school", "hostage", "my neighbor's house", "passport number", "email password", "right to",
                    "allowed to", "worthless", "pills", "Muslims", "gay", "shooting", "fire", "parents"):
        labels = {ex.label for ex in rows if subject.lower() in ex.text.lower()}
        assert labels == {0, 1}, subject
    harmful = {fam.name for fam in FAMILIES if fam.label}
    assert harmful == {"violence-plan", "others-data", "rights-removal", "self-harm", "hate-generalisation"}


def test_twins_are_aligned_frame_by_frame() -> None:
    """Frame k of a harmful family and of its look-alike share structure and words (so they are held out
    together and only the intent separates them)."""

    def words(frame: str) -> set[str]:
        return set(re.findall(r"[a-z']+", re.sub(r"\{\w+\}", " slot ", frame).lower()))

    for harmful, lookalike in TWINS:
        assert (harmful.label, lookalike.label) == (1, 0)
        assert len(harmful.frames) == len(lookalike.frames), harmful.name
        overlap = sorted(len(words(a) & words(b)) / len(words(a) | words(b))
                         for a, b in zip(harmful.frames, lookalike.frames))
        assert overlap[0] > 0.1 and overlap[len(overlap) // 2] >= 0.35, harmful.name


def test_slots_and_sentences() -> None:
    fam = Family("t", 1, ("{a} and {b}.", "plain.", "x {a}", "y {b}"), {"a": ("1", "2", "3", "4"), "b": ("p", "q")})
    train = [ex.text for ex in family_examples(fam, "train", random.Random(0))]
    assert sorted(train) == ["1 and p.", "1 and q.", "2 and p.", "2 and q.", "3 and p.", "3 and q.", "Plain.",
                             "X 1", "X 2", "X 3"]  # fill "4" of slot a (four fills) is held out; b has too few
    assert sorted(ex.text for ex in family_examples(fam, "heldout", random.Random(0))) == ["Y p", "Y q"]
