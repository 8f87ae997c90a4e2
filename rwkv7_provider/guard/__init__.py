"""The embedded guard: a small RWKV-7 trained by this package to answer the self-check rails' prompts.

    prompts.py        the canonical self-check templates (what the shipped configs send) and paraphrases
    data.py           labeled JSONL: loading, held-out sources, rebalancing, the exact prompts
    augment.py        generated rows whose framing is label-neutral (look-alikes, lists, bot responses)
    families.py       generated failure families (harmful requests and their look-alikes), a quarter held out
    attacks.py        attack families (template imitation, invisible characters, overrides, accents, look-alikes)
                      and their harmless look-alikes, for training and the attack set (`run_attack_set`)
    languages.py      everyday messages and harmful requests in 20 languages, some held out
    embed_init.py     token embeddings started from a BERT-style encoder (training time only)
    scoring.py        how the guard answers a batch of checks (shared by training and evaluation)
    train.py          `rwkv7-provider train-guard`
    evaluate.py       `rwkv7-provider eval-guard`: metrics next to a TF-IDF baseline, warm latency
    card.py           the model card written beside new weights (text in card_template.md)
    assets/           the shipped weights, tokenizer and model card (`model: default`)
    training_data/    the labeled data it is trained on, with SOURCES.md (sources and licenses)

This is an offline pipeline over `runtime/` and `model/`; nothing at serving time imports it.
"""
