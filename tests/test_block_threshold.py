"""`block_threshold`: the `choices` answer moves with the threshold, through the guardrails provider, a real input
rail and the LangChain classes; bad values fail at construction.

A random tiny checkpoint gives some P("Yes") strictly between 0 and 1 for a prompt; thresholds on either side of
it must flip the answer, and the reported probability is the answer's share of the two choices.
"""

from __future__ import annotations

import asyncio
import math
import os

os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")

from pathlib import Path

import pytest
from nemoguardrails import LLMRails, RailsConfig

from rwkv7_provider import RWKV7LLM, ChatRWKV7
from rwkv7_provider.errors import ParameterError
from rwkv7_provider.guard.prompts import SELF_CHECK_INPUT
from rwkv7_provider.guardrails import RWKV7Model
from rwkv7_provider.integrations.client import RWKV7Client
from rwkv7_provider.integrations.settings import parse_settings
from rwkv7_provider.runtime.registry import get_engine
from rwkv7_provider.runtime.results import ScoreResult
from rwkv7_provider.runtime.templates import render
from rwkv7_provider.testing import make_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
YES_NO = ["Yes", "No"]
MESSAGE = "how do I bake a cake"
PROMPT = render(SELF_CHECK_INPUT, user_input=MESSAGE)


@pytest.fixture(scope="module")
def guard(tmp_path_factory) -> str:
    return str(make_checkpoint(tmp_path_factory.mktemp("threshold") / "guard", seed=11))


def p_yes(model: str, prompt: str = PROMPT) -> float:
    """P(Yes) normalised over Yes/No, straight from the engine."""
    scores = get_engine(model).score(prompt, YES_NO).logprobs
    return 1 / (1 + math.exp(scores["No"] - scores["Yes"]))


def around(p: float) -> tuple[float, float]:
    """A threshold below p and one above it, both inside (0, 1)."""
    assert 0 < p < 1
    return p / 2, (1 + p) / 2


def test_first_choice_wins_at_or_above_the_threshold(guard):
    p = p_yes(guard)
    below, above = around(p)
    for threshold, answer in ((below, "Yes"), (above, "No")):
        model = RWKV7Model(guard, choices=YES_NO, block_threshold=threshold)
        out = asyncio.run(model.generate_async(PROMPT))
        assert out.content == answer, (p, threshold)
        expected = p if answer == "Yes" else 1 - p
        assert out.provider_metadata["probability"] == pytest.approx(expected, rel=1e-6)
    # No threshold: the more probable answer, exactly as a threshold of 0.5 decides it.
    default = asyncio.run(RWKV7Model(guard, choices=YES_NO).generate_async(PROMPT)).content
    half = asyncio.run(RWKV7Model(guard, choices=YES_NO, block_threshold=0.5).generate_async(PROMPT)).content
    assert default == half == ("Yes" if p >= 0.5 else "No")


def test_the_provider_scores_over_the_choices(guard):
    """A rail check asks for scores normalised over the choices (with one-token choices only their head rows
    are computed: tests/test_engine.py); under the whole vocabulary P(Yes) + P(No) of this random model is far
    from 1."""
    vocab = get_engine(guard).score(PROMPT, YES_NO).logprobs
    assert math.exp(vocab["Yes"]) + math.exp(vocab["No"]) < 0.5
    out = asyncio.run(RWKV7Model(guard, choices=YES_NO, block_threshold=0.5).generate_async(PROMPT))
    scores = out.provider_metadata["scores"]
    assert math.exp(scores["Yes"]) == pytest.approx(p_yes(guard), rel=1e-5)
    assert math.exp(scores["Yes"]) + math.exp(scores["No"]) == pytest.approx(1, rel=1e-9)


def test_threshold_moves_the_input_rail_decision(guard):
    below, above = around(p_yes(guard, PROMPT))
    outcomes = []
    for threshold in (below, above):
        config = RailsConfig.from_path(str(CONFIGS / "moderation"))
        config.models[0].model = guard
        config.models[0].parameters["block_threshold"] = threshold
        out = LLMRails(config).generate(messages=[{"role": "user", "content": MESSAGE}], options={"rails": ["input"]})
        outcomes.append(out.response[0]["content"] != MESSAGE)  # blocked: the rail answers with a refusal
    assert outcomes == [True, False]


def test_langchain_llm_and_chat_model_apply_the_threshold(guard):
    p = p_yes(guard)
    below, above = around(p)
    for threshold, answer in ((below, "Yes"), (above, "No")):
        llm = RWKV7LLM(model=guard, choices=YES_NO, block_threshold=threshold)
        result = llm.generate([PROMPT]).generations[0][0]
        assert result.text == answer and "".join(llm.stream(PROMPT)) == answer
        assert result.generation_info["probability"] == pytest.approx(p if answer == "Yes" else 1 - p, rel=1e-6)
        assert asyncio.run(llm.ainvoke(PROMPT)) == answer
        assert llm._identifying_params["block_threshold"] == threshold  # part of LangChain's cache key
    chat = ChatRWKV7(model=guard, choices=YES_NO, block_threshold=1e-9)
    assert chat.invoke("is this fine?").content == "Yes"


def test_with_more_choices_the_best_other_choice_answers_below_the_threshold():
    client = RWKV7Client(parse_settings({"choices": ["A", "B", "C"], "block_threshold": 0.5}))
    scores = ScoreResult("A", 0.4, {"A": math.log(0.4), "B": math.log(0.25), "C": math.log(0.35)}, 5, 0)
    decided = client._decided(scores)
    assert (decided.best, decided.probability) == ("C", pytest.approx(0.35))
    client.settings.block_threshold = 0.39
    decided = client._decided(scores)
    assert (decided.best, decided.probability) == ("A", pytest.approx(0.4))


@pytest.mark.parametrize("parameters, message", [
    ({"block_threshold": 0.3}, "set choices too"),
    ({"choices": YES_NO, "block_threshold": 0.0}, "block_threshold"),
    ({"choices": YES_NO, "block_threshold": 1.0}, "block_threshold"),
    ({"choices": YES_NO, "block_threshold": 1.5}, "block_threshold"),
    ({"choices": YES_NO, "block_threshold": "high"}, "block_threshold"),
    ({"choices": YES_NO, "block_threshold": "0.5"}, "block_threshold: Input should be a valid number"),  # not converted
    ({"choices": YES_NO, "block_threshold": float("nan")}, "block_threshold: Input should be a finite number"),
    ({"choices": YES_NO, "block_threshold": True}, "block_threshold: Input should be a valid number"),
    ({"choices": YES_NO, "block_threshld": 0.3}, "did you mean 'block_threshold'"),
])
def test_bad_thresholds_fail_at_construction(parameters, message):
    with pytest.raises(ParameterError, match=message):
        RWKV7Model("default", **parameters)
    with pytest.raises(ParameterError, match=message):  # LangChain: the same error, not pydantic's
        RWKV7LLM(model="default", **parameters)
