"""Accuracy of the compressed weight formats against float32 on the same weights, on a trained RWKV-7.

The embedded guard (or --guard DIR: a model directory with tokenizer.json) is loaded in float32 and in each
`quantize` format. Two measurements, each printed with its aim:
  next token  the guard's held-out eval prompts, rendered with the canonical template and concatenated, run
              token by token through `decode_step` + head (the GEMV path) for --positions positions, and as one
              prefill (the dequantise + GEMM path, in the compute dtype): top-1 agreement (aim >= 98%) and
              mean KL(fp32 || format) of the next-token distributions (aim <= 0.02)
  verdicts    P(unsafe) of --checks held-out eval checks (evenly spaced; 0 = all 6,888) through the guard's
              batched scorer: verdict agreement at 0.5 (aim >= 99%) and the AUROC change (aim <= 0.005)
Usage: python bench/quant_accuracy.py [--formats bf16 int8 q4] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rwkv7_provider.model import RWKV7
from rwkv7_provider.model.cpu_features import gemm_dtype
from tokenizers import Tokenizer

from rwkv7_provider.guard.data import (
    DEFAULT_DATA_DIR,
    HELDOUT_SOURCES,
    load_data,
    prompt_for,
    split_by_source,
    templates,
)
from rwkv7_provider.guard.evaluate import DEFAULT_GUARD, auroc
from rwkv7_provider.guard.scoring import GuardTokens, score_examples


def compare(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """(top-1 agreement, mean KL(ref || got)) of two [P, V] logit tensors."""
    agree = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="none")
    return agree, kl.sum(-1).mean().item()


@torch.inference_mode()
def next_token_logits(model: RWKV7, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(decode-path logits, prefill-path logits), both [P, V] float32, for the token sequence `ids` [P]."""
    state = model.zero_state(1)
    decoded = torch.stack([model.head(model.decode_step(t.view(1), state))[0].float() for t in ids])
    prefilled, _ = model(ids.view(1, -1))
    return decoded, prefilled[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--guard", type=Path, default=DEFAULT_GUARD)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--formats", nargs="+", default=["bf16", "int8", "q4"])
    p.add_argument("--positions", type=int, default=1000)
    p.add_argument("--checks", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    toks = GuardTokens(Tokenizer.from_file(str(args.guard / "tokenizer.json")))
    _, heldout = split_by_source(load_data(args.data), HELDOUT_SOURCES)
    checks = heldout[:: max(1, len(heldout) // args.checks)] if args.checks else heldout
    ids: list[int] = []
    for ex in heldout:
        ids += toks.encode([prompt_for(ex, templates(ex.task)[0])])[0]
        if len(ids) >= args.positions:
            break
    ids_t = torch.tensor(ids[: args.positions])
    print(f"{len(ids_t)} positions of held-out prompts; {len(checks)} held-out checks; "
          f"prefill compute dtype {gemm_dtype()}")

    def verdict_scores(model: RWKV7) -> list[float]:
        scores: list[float] = []
        for task in ("input", "output"):
            rows = [ex for ex in checks if ex.task == task]
            with torch.inference_mode():
                scores += score_examples(model, toks, rows, templates(task)[0])
        return scores

    labels = [ex.label for task in ("input", "output") for ex in checks if ex.task == task]
    ref = RWKV7.from_pretrained(args.guard)
    ref_decode, ref_prefill = next_token_logits(ref, ids_t)
    ref_scores = verdict_scores(ref)
    ref_auroc = auroc(labels, ref_scores)
    print(f"\n{'format':<8}{'decode top-1':>14}{'decode KL':>11}{'prefill top-1':>15}{'prefill KL':>12}"
          f"{'verdicts':>10}{'AUROC delta':>13}")
    for fmt in args.formats:
        model = RWKV7.from_pretrained(args.guard, quantize=fmt)
        dec, pre = next_token_logits(model, ids_t)
        (d_agree, d_kl), (p_agree, p_kl) = compare(ref_decode, dec), compare(ref_prefill, pre)
        scores = verdict_scores(model)
        verdicts = sum((a >= 0.5) == (b >= 0.5) for a, b in zip(ref_scores, scores)) / len(scores)
        delta = abs(auroc(labels, scores) - ref_auroc)
        print(f"{fmt:<8}{d_agree:>13.2%} {d_kl:>10.5f}{p_agree:>14.2%} {p_kl:>11.5f}{verdicts:>9.2%} {delta:>12.5f}")
    print("aims: top-1 >= 98%, KL <= 0.02, verdicts >= 99%, AUROC delta <= 0.005")


if __name__ == "__main__":
    main()
