"""train-guard end to end on a tiny data slice and a tiny model (seconds): outputs, determinism, resume, fine-tune."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import torch
from rwkv7_provider.model.rwkv7 import RWKV7
from rwkv7_provider.model.train import init_weights
from safetensors.torch import load_file
from tokenizers import Tokenizer

from rwkv7_provider import cli
from rwkv7_provider.errors import GuardDataError, InputError, ParameterError
from rwkv7_provider.guard import card as card_module
from rwkv7_provider.guard import scoring
from rwkv7_provider.guard import train as guard_train
from rwkv7_provider.guard.augment import augment
from rwkv7_provider.guard.average import recipe
from rwkv7_provider.guard.data import DEFAULT_DATA_DIR as DATA
from rwkv7_provider.guard.data import (
    MAX_CUE_UPWEIGHT,
    SHORTCUT_CUES,
    Example,
    balance_cues,
    length_bin,
    prompt_for,
    sample_weights,
    split_by_source,
    templates,
    truncate_middle,
)
from rwkv7_provider.guard.data import load_file as load_jsonl
from rwkv7_provider.guard.embed_init import pretrained_embeddings
from rwkv7_provider.guard.prompts import INPUT_TEMPLATES, SELF_CHECK_INPUT, SELF_CHECK_OUTPUT
from rwkv7_provider.runtime.templates import render, split_template
from rwkv7_provider.testing import make_encoder

TINY_ARGS = ["--layers", "1", "--width", "64", "--vocab-size", "400", "--batch-size", "4", "--augment", "8", "--augment-responses", "8",
             "--attacks", "8",
             "--warmup", "2", "--no-eval", "--no-progress", "--heldout", "truthfulqa,toxigen-seed"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A few rows of every (source, label) of the shipped data, both tasks."""
    rng = random.Random(0)
    groups: dict[tuple[str, str], list[str]] = {}
    for f in sorted(DATA.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                groups.setdefault((row["source"], row["label"]), []).append(line)
    d = tmp_path_factory.mktemp("tiny_data")
    lines = [line for key in sorted(groups) for line in rng.sample(groups[key], min(3, len(groups[key])))]
    (d / "slice.jsonl").write_text("".join(lines))
    return d


def train(data: Path, out: Path, *extra: str) -> Path:
    guard_train.main(["--data-dir", str(data), "--out", str(out), *TINY_ARGS, *extra])
    return out


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def test_train_writes_a_loadable_guard(tiny_data: Path, tmp_path: Path) -> None:
    out = train(tiny_data, tmp_path / "g", "--steps", "3")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["guard"]["command"].startswith("rwkv7-provider train-guard --data-dir")
    assert config["guard"]["answers"] == {"block": " Yes", "allow": " No"}
    model = RWKV7.from_pretrained(out)
    assert model.config.n_layer == 1 and model.config.n_embd == 64
    assert next(iter(weights(out).values())).dtype == torch.bfloat16


def test_same_seed_same_weights_and_resume_matches(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    a = weights(train(tiny_data, tmp_path / "a", "--steps", "4", "--checkpoint-every", "2"))
    b = weights(train(tiny_data, tmp_path / "b", "--steps", "4", "--checkpoint-every", "2"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # Interrupt a run after its step-2 checkpoint, then re-run the same command: it resumes to the same weights.
    calls = {"n": 0}
    real_loss = guard_train.guard_loss

    def crashing_loss(model, batch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_loss(model, batch, **kwargs)

    monkeypatch.setattr(guard_train, "guard_loss", crashing_loss)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, tmp_path / "c", "--steps", "4", "--checkpoint-every", "2")
    monkeypatch.setattr(guard_train, "guard_loss", real_loss)
    c = weights(train(tiny_data, tmp_path / "c", "--steps", "4", "--checkpoint-every", "2"))
    assert all(torch.equal(a[k], c[k]) for k in a)

    # The resumed run reports the whole run's loss (all four steps), also when the finished command is run once
    # more (as it is to write a card).
    def report(name: str) -> dict:
        return json.loads((tmp_path / name / "config.json").read_text())["guard"]

    assert report("c")["final_loss"] == pytest.approx(report("a")["final_loss"], rel=1e-6)
    train(tiny_data, tmp_path / "c", "--steps", "4", "--checkpoint-every", "2")
    assert report("c")["final_loss"] == pytest.approx(report("a")["final_loss"], rel=1e-6)


def test_resume_refuses_other_settings(tiny_data: Path, tmp_path: Path) -> None:
    train(tiny_data, tmp_path / "g", "--steps", "2")
    with pytest.raises(ParameterError, match="other settings"):
        train(tiny_data, tmp_path / "g", "--steps", "2", "--lr", "1e-4")


def test_balance_cues_reaches_the_sampling_and_is_a_setting(tiny_data: Path, tmp_path: Path, monkeypatch) -> None:
    seen = []
    real = guard_train.sample_weights

    def recording(*args, **kwargs):
        seen.append(kwargs.get("cues"))
        return real(*args, **kwargs)

    monkeypatch.setattr(guard_train, "sample_weights", recording)
    train(tiny_data, tmp_path / "a", "--steps", "1")
    train(tiny_data, tmp_path / "b", "--steps", "1", "--balance-cues")
    assert seen == [False, True]
    with pytest.raises(ParameterError, match="other settings"):  # a run does not resume with other weights
        train(tiny_data, tmp_path / "a", "--steps", "1", "--balance-cues")


def test_fine_tune_from_a_guard(tiny_data: Path, tmp_path: Path) -> None:
    base = train(tiny_data, tmp_path / "base", "--steps", "2")
    tuned = train(tiny_data, tmp_path / "tuned", "--steps", "2", "--init", str(base))
    assert (tuned / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
    assert any(not torch.equal(v, weights(base)[k]) for k, v in weights(tuned).items())


def test_embed_init_from_an_encoder(tiny_data: Path, tmp_path: Path, capsys) -> None:
    encoder = make_encoder(tmp_path / "encoder")
    out = train(tiny_data, tmp_path / "g", "--steps", "1", "--lr", "1e-7", "--embed-init", str(encoder))
    config = json.loads((out / "config.json").read_text())
    assert config["guard"]["embed_init"] == str(encoder)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    start = pretrained_embeddings(tokenizer, encoder, 64, seed=0)
    assert torch.allclose(RWKV7.from_pretrained(out).emb.weight.float(), start, atol=1e-3, rtol=1e-2)  # bf16, one tiny step

    with pytest.raises(SystemExit):  # fine-tuning keeps the guard's own embeddings
        train(tiny_data, tmp_path / "h", "--init", str(out), "--embed-init", str(encoder))
    assert "cannot be combined with --init" in capsys.readouterr().err
    assert cli.main(["train-guard", "--data-dir", str(tiny_data), "--out", str(tmp_path / "i"), *TINY_ARGS,
                     "--embed-init", str(tmp_path / "nothing")]) == 2
    assert "not an encoder directory" in capsys.readouterr().err


def test_synthetic_responses_are_unsafe_only_when_a_harmful_request_is_answered() -> None:
    safe, unsafe, refusal = ["What is the capital of Peru?", "Bake a cake"], ["Make a bomb", "Poison a dog"], "Sorry, no."
    rows = [Example(t, 0, "s") for t in safe] + [Example(t, 1, "u") for t in unsafe]
    rows.append(Example("Make a bomb", 0, "o", task="output", response=refusal))
    made = [ex for ex in augment(rows, random.Random(0), 0, 0, n_responses=40) if ex.task == "output"]
    assert len(made) == 40 and {ex.label for ex in made} == {0, 1}
    for ex in made:
        refused = ex.response.startswith(refusal)
        assert ex.label == (ex.text in unsafe and not refused)
        if not refused:  # the answer restates the request or quotes messages of its label, never the other
            same, other = (unsafe, safe) if ex.text in unsafe else (safe, unsafe)
            assert any(t in ex.response or t.lower().rstrip("?") in ex.response for t in same)
            assert not any(t in ex.response or t.lower().rstrip("?") in ex.response for t in other)


def test_generated_harms_come_with_harmless_look_alikes() -> None:
    rows = augment([], random.Random(0), 0, 0)  # only the template-generated sets
    for subject in ("Muslims", "old people", "address", "social security number", "system prompt", "kill"):
        labels = {ex.label for ex in rows if subject.lower() in ex.text.lower()}
        assert labels == {0, 1}, subject  # the subject alone never decides the label
    weights = dict(zip((ex.source for ex in rows), sample_weights(rows, source_cap=10_000)))
    assert weights["augmented/extraction"] > weights["augmented/harmful-plain"]  # rare harms are sampled more


def _share(rows: list[Example], weights: list[float], label: int, cue) -> float:
    total = sum(w for ex, w in zip(rows, weights) if ex.label == label)
    return sum(w for ex, w in zip(rows, weights) if ex.label == label and cue.search(ex.text)) / total


def test_balanced_cues_are_as_common_in_either_label_and_keep_the_label_balance() -> None:
    """Quotes and reported speech 5x as common among unsafe messages (as in the shipped data) stop predicting the
    label: `balance_cues` makes them as common among safe ones; `sample_weights` keeps equal label weight in each
    length bin, and without `cues` nothing changes."""
    rng = random.Random(0)
    rows = []
    for label, quoted, reported in ((0, 0.03, 0.01), (1, 0.15, 0.05)):
        for i in range(2000):
            text = rng.choice(("hello there", "a longer message about the weather and the garden " * 2))
            if rng.random() < quoted:
                text += ' "quote"'
            if rng.random() < reported:
                text += " She wrote back."
            rows.append(Example(text, label, f"src{i % 3}"))
    plain = sample_weights(rows, source_cap=10_000)
    assert plain == sample_weights(rows, source_cap=10_000, cues=False)
    rebalanced = balance_cues(rows, plain)
    balanced = sample_weights(rows, source_cap=10_000, cues=True)
    for cue in SHORTCUT_CUES:
        assert _share(rows, plain, 0, cue) < _share(rows, plain, 1, cue) / 3  # the bias the test starts from
        assert _share(rows, rebalanced, 0, cue) == pytest.approx(_share(rows, rebalanced, 1, cue), rel=0.02)
        assert _share(rows, balanced, 0, cue) >= 0.95 * _share(rows, balanced, 1, cue)
    for weights in (plain, balanced):
        for b in {length_bin(ex) for ex in rows}:
            mass = [sum(w for ex, w in zip(rows, weights) if ex.label == lab and length_bin(ex) == b) for lab in (0, 1)]
            assert mass[0] == pytest.approx(mass[1])
    assert [w for ex, w in zip(rows, rebalanced) if ex.label] == [w for ex, w in zip(rows, plain) if ex.label]
    ratios = [r / p for r, p in zip(rebalanced, plain)]
    assert max(ratios) <= MAX_CUE_UPWEIGHT ** len(SHORTCUT_CUES) and min(ratios) == 1.0


def test_answer_words_are_single_tokens_even_when_the_corpus_outnumbers_them() -> None:
    """64 made-up words, 3000 times each, fill a 300-token vocabulary before 1000 answer lines get a merge."""
    words = " ".join(f"w{a}{b}q" for a in "abcdefgh" for b in "abcdefgh")
    tok = guard_train.train_tokenizer([words] * 3000, 300)
    toks = scoring.GuardTokens(tok)  # raises unless ' Yes', ' No' and the newline are single tokens
    assert tok.decode([toks.block]) == " Yes" and tok.decode([toks.allow]) == " No"


def test_batches_share_the_prefix_and_end_with_the_answer(tiny_data: Path) -> None:
    rows = load_jsonl(tiny_data / "slice.jsonl", "input")[:6]
    tok = guard_train.train_tokenizer([r.text for r in rows] + list(INPUT_TEMPLATES) * 5, 400)
    toks = scoring.GuardTokens(tok)
    batch = scoring.encode_checks(rows, SELF_CHECK_INPUT, toks, 10_000, answers=True)
    for i, ex in enumerate(rows):
        ids = batch.prefix[0].tolist() + batch.suffix[i, : batch.lengths[i]].tolist()
        answer = " Yes" if ex.label else " No"
        assert tok.decode(ids) == prompt_for(ex, SELF_CHECK_INPUT) + answer


def test_unsafe_weight_only_reweights_unsafe_rows(tiny_data: Path) -> None:
    rows = load_jsonl(tiny_data / "slice.jsonl", "input")
    mixed = [next(r for r in rows if r.label), *[r for r in rows if not r.label][:3]]
    tok = guard_train.train_tokenizer([r.text for r in rows] + list(INPUT_TEMPLATES) * 5, 400)
    toks = scoring.GuardTokens(tok)
    model = RWKV7(guard_train.small_config(1, 64, tok.get_vocab_size()))
    init_weights(model, 0)

    def loss(examples, weight):
        return guard_train.guard_loss(model, (scoring.encode_checks(examples, SELF_CHECK_INPUT, toks, 64, True),
                                              toks), unsafe_weight=weight)[0].item()

    assert loss(mixed, 3.0) != pytest.approx(loss(mixed, 1.0))
    assert loss(mixed[1:], 3.0) == pytest.approx(loss(mixed[1:], 1.0))  # no unsafe row: nothing changes


def tiny_guard_batch(rows: list[Example], width: int = 64) -> tuple[RWKV7, scoring.GuardTokens, scoring.Batch]:
    tok = guard_train.train_tokenizer([r.text for r in rows] + list(INPUT_TEMPLATES) * 5, 400)
    toks = scoring.GuardTokens(tok)
    model = RWKV7(guard_train.small_config(1, width, tok.get_vocab_size()))
    init_weights(model, 0)
    with torch.no_grad():  # lively weights: a fresh init has zero output projections and no gradient to compare
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return model, toks, scoring.encode_checks(rows, SELF_CHECK_INPUT, toks, 64, answers=True)


def test_bf16_autocast_loss_and_gradients_track_fp32(tiny_data: Path) -> None:
    """What `--precision bf16` runs (the default with --device cuda), checked on CPU: the forward in bfloat16,
    parameters, gradients and loss in float32, within bf16 rounding of the fp32 step."""
    model, toks, batch = tiny_guard_batch(load_jsonl(tiny_data / "slice.jsonl", "input")[:6])

    def loss_and_grads(autocast):
        model.zero_grad()
        loss, _ = guard_train.guard_loss(model, (batch, toks), autocast=autocast)
        loss.backward()
        return loss, torch.cat([p.grad.flatten() for p in model.parameters()])

    loss32, grad32 = loss_and_grads(None)
    loss16, grad16 = loss_and_grads(torch.bfloat16)
    assert loss16.dtype == torch.float32 and all(p.grad.dtype == torch.float32 for p in model.parameters())
    assert loss16.item() != loss32.item()  # the autocast really ran in bf16 ...
    assert loss16.item() == pytest.approx(loss32.item(), rel=0.05)  # ... and stayed close
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.98


def test_triton_wkv_trains_like_the_chunked_form(tiny_data: Path, monkeypatch) -> None:
    """The WKV path `--device cuda` takes (Triton forward and backward; interpreted here on CPU tensors) gives
    the guard loss the chunked PyTorch form gives."""
    pytest.importorskip("triton")
    model, toks, batch = tiny_guard_batch(load_jsonl(tiny_data / "slice.jsonl", "input")[:2])
    grads = {}
    for impl in ("chunk", "triton"):
        monkeypatch.setenv("RWKV7_WKV_IMPL", impl)
        model.zero_grad()
        loss, _ = guard_train.guard_loss(model, (batch, toks))
        loss.backward()
        grads[impl] = (loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert grads["triton"][0] == pytest.approx(grads["chunk"][0], rel=1e-4)
    assert torch.allclose(grads["triton"][1], grads["chunk"][1], rtol=1e-3, atol=1e-5)


def test_cuda_without_a_gpu_is_a_clear_error(tiny_data: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["train-guard", "--data-dir", str(tiny_data), "--out", str(tmp_path / "g"), *TINY_ARGS,
                     "--device", "cuda"]) == 2
    assert "--device cuda: no CUDA device is available" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()  # checked before any work


def test_bot_response_checks_keep_their_own_token_budget(tiny_data: Path) -> None:
    rows = [Example("word " * 60, i % 2, "s") for i in range(8)]
    rows += [Example("tell me", i % 2, "o", task="output", response="answer " * 60) for i in range(8)]
    tok = guard_train.train_tokenizer([r.text + r.response for r in rows] + list(INPUT_TEMPLATES) * 5, 400)
    plan = guard_train.BatchPlan(rows, [1.0] * len(rows), scoring.GuardTokens(tok), 4, {"input": 10, "output": 50}, 0)
    longest = {}
    for step in range(4):
        batch, _ = plan(step)
        task = "output" if batch.suffix.shape[1] > 11 else "input"
        longest[task] = int(batch.lengths.max())
    assert longest == {"input": 11, "output": 51}  # the budget plus the answer token


def test_a_run_on_every_source_writes_a_card_with_the_family_slice(tiny_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    args = [a for a in TINY_ARGS if a != "--no-eval"]
    args[args.index("--heldout") + 1] = ""
    guard_train.main(["--data-dir", str(tiny_data), "--out", str(tmp_path / "g"), *args, "--steps", "1"])
    card = (tmp_path / "g" / "MODEL_CARD.md").read_text()
    assert "Held-out sources: none" in card and "(held-out sources)" not in card
    assert "### failure families (held-out templates, never trained on)" in card
    assert "| augmented/self-harm |" in card and "Operating points" in card


def test_a_fine_tuned_guards_card_names_its_starting_point_and_how_both_were_made(tiny_data: Path,
                                                                                  tmp_path: Path) -> None:
    base = train(tiny_data, tmp_path / "base", "--steps", "1", "--embed-init", str(make_encoder(tmp_path / "enc")))
    tuned = train(tiny_data, tmp_path / "tuned", "--steps", "1", "--init", str(base))
    info = json.loads((tuned / "config.json").read_text())["guard"]
    made = json.loads((base / "config.json").read_text())["guard"]["command"]
    assert info["base"] == {"path": str(base), "command": made, "embed_init": str(tmp_path / "enc")}
    card = card_module.render_card(RWKV7.from_pretrained(tuned), info["command"], info, [])
    assert f"language model fine-tuned from the guard in `{base}`" in card
    reproduce = card.split("## Reproduce", 1)[1]
    assert reproduce.index(made) < reproduce.index(info["command"])  # the starting point first
    assert "all-MiniLM-L6-v2" in card  # its embeddings came from the base's --embed-init
    assert guard_train.base_guard(tmp_path / "enc")["command"] is None  # a starting point train-guard did not make
    scratch = json.loads((base / "config.json").read_text())["guard"]
    assert "trained from scratch" in card_module.render_card(RWKV7.from_pretrained(base), made, scratch, [])


def test_bad_data_is_reported_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "label": "safe"}\n{not json}\n')
    with pytest.raises(GuardDataError, match=r"bad.jsonl:2"):
        load_jsonl(bad)
    bad.write_text('{"text": "hi", "label": "maybe"}\n')
    with pytest.raises(GuardDataError, match=r"bad.jsonl:1: unknown label 'maybe'"):
        load_jsonl(bad)
    with pytest.raises(GuardDataError, match="not found"):
        load_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(GuardDataError, match="no training rows|not found"):
        guard_train.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])


def test_templates_and_helpers() -> None:
    assert SELF_CHECK_INPUT.endswith('User message: "{{ user_input }}"\n\nQuestion: Should the user message be '
                                     'blocked (Yes or No)?\nAnswer:')
    assert "{{ bot_response }}" in SELF_CHECK_OUTPUT
    assert "code" not in SELF_CHECK_INPUT.split("Company policy")[1].split("allowed")[0].replace("programming", "")
    assert render("a {{ user_input }} b", user_input="x") == "a x b"
    with pytest.raises(InputError, match="template variable .user_input. not given"):
        render("{{ user_input }}")
    with pytest.raises(ParameterError, match="unknown task 'chat'"):
        templates("chat")
    prefix, rest = split_template(SELF_CHECK_INPUT, "user_input")
    assert prefix.endswith('User message: "') and rest.startswith("{{ user_input }}")
    assert truncate_middle(list(range(10)), 6, tail=2) == [0, 1, 2, 3, 8, 9]
    rows = [Example("a", 0, "s1"), Example("b", 1, "s2"), Example("c", 0, "s2")]
    assert split_by_source(rows, {"s2"}) == ([rows[0]], rows[1:])
    assert all(w > 0 for w in sample_weights(rows, source_cap=1))


def test_a_run_on_every_source_quotes_its_recipe_card(tiny_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    args = [a for a in TINY_ARGS if a != "--no-eval"]
    recipe = tmp_path / "recipe"
    guard_train.main(["--data-dir", str(tiny_data), "--out", str(recipe), *args, "--steps", "1"])
    with pytest.raises(ParameterError, match="--recipe-card needs --heldout ''"):
        guard_train.main(["--data-dir", str(tiny_data), "--out", str(tmp_path / "x"), *args, "--steps", "1",
                          "--recipe-card", str(recipe / "MODEL_CARD.md")])
    args[args.index("--heldout") + 1] = ""
    guard_train.main(["--data-dir", str(tiny_data), "--out", str(tmp_path / "g"), *args, "--steps", "1",
                      "--recipe-card", str(recipe / "MODEL_CARD.md")])
    card = (tmp_path / "g" / "MODEL_CARD.md").read_text()
    assert "Held-out sources: none" in card
    chosen = card.split("## How this recipe was chosen", 1)[1]
    assert "Held-out sources (never trained on; the metrics below): `toxigen-seed`, `truthfulqa`." in chosen
    assert "#### input rail (held-out sources)" in chosen and "| guard |" in chosen
    with pytest.raises(ParameterError, match="no held-out sources or metrics"):
        card_module.recipe_section("# a card without metrics")


def test_average_guards_is_the_mean_of_fine_tunes_of_one_guard(tiny_data: Path, tmp_path: Path, capsys) -> None:
    base = train(tiny_data, tmp_path / "base", "--steps", "2")
    a = train(tiny_data, tmp_path / "a", "--steps", "3", "--init", str(base), "--seed", "1")
    b = train(tiny_data, tmp_path / "b", "--steps", "3", "--init", str(base), "--seed", "2")
    out = tmp_path / "mean"
    assert cli.main(["average-guards", str(a), str(b), "--out", str(out), "--no-eval"]) == 0
    wa, wb, mean = weights(a), weights(b), weights(out)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # the seeds trained apart
    for k in wa:  # the mean in fp32, rounded once to bf16
        assert torch.allclose(mean[k].float(), (wa[k].float() + wb[k].float()) / 2, rtol=1e-2, atol=1e-3), k
    assert (out / "tokenizer.json").read_bytes() == (a / "tokenizer.json").read_bytes()
    RWKV7.from_pretrained(out)

    info = json.loads((out / "config.json").read_text())["guard"]
    members = [json.loads((g / "config.json").read_text())["guard"] for g in (a, b)]
    assert [m["command"] for m in info["members"]] == [m["command"] for m in members]
    assert info["final_loss"] == pytest.approx((members[0]["final_loss"] + members[1]["final_loss"]) / 2)
    assert info["command"].startswith("rwkv7-provider average-guards ") and info["base"]["path"] == str(base)
    reproduce = card_module._reproduce(info["command"], info["base"], info["members"])
    order = [info["base"]["command"], members[0]["command"], members[1]["command"], info["command"]]
    assert [reproduce.index(c) for c in order] == sorted(reproduce.index(c) for c in order)
    assert card_module._origin(info["base"], info["members"]).startswith("averaged from 2 fine-tunes")

    # Only fine-tunes of one guard with one recipe, differing in seed, have a mean that is a model.
    assert recipe("train-guard --out a --seed=2 --no-eval --lr 1") == recipe("train-guard --lr 1 --seed 2 --out=b")
    assert recipe("train-guard --lr 1") == (("train-guard", "--lr", "1"), "0")  # train-guard's default seed
    other = train(tiny_data, tmp_path / "other", "--steps", "3", "--init", str(base), "--seed", "3", "--lr", "1e-4")
    for guards, message in (([a, base], "trained from scratch"), ([a, other], "other settings"),
                            ([a, a], "share a seed"), ([a], "at least two")):
        assert cli.main(["average-guards", *map(str, guards), "--out", str(tmp_path / "bad"), "--no-eval"]) == 2
        assert message in capsys.readouterr().err
