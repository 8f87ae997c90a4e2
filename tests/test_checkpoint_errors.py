"""Bad input: each mistake gets an error that names it, and nothing deep from torch leaks out."""

from __future__ import annotations

import pytest
import torch
from rwkv7_provider.model import RWKV7, CheckpointError

from rwkv7_provider.errors import InputError
from rwkv7_provider.testing import SMALL, random_state_dict


def test_rwkv6_checkpoint_is_refused(tmp_path):
    sd = {"emb.weight": torch.zeros(10, 8), "blocks.0.att.time_decay": torch.zeros(8), "blocks.0.att.time_faaaa": torch.zeros(2, 4)}
    torch.save(sd, tmp_path / "v6.pth")
    with pytest.raises(CheckpointError, match="RWKV-4/5/6"):
        RWKV7.from_pretrained(tmp_path / "v6.pth")


def test_truncated_file(tmp_path, small_pth):
    path, _ = small_pth
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        RWKV7.from_pretrained(tmp_path / "cut.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("hello, I am a text file")
    with pytest.raises(CheckpointError):
        RWKV7.from_pretrained(tmp_path / "notes.pth")


def test_pickled_code_is_not_executed(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"emb.weight": Evil()}))
    with pytest.raises(CheckpointError):
        RWKV7.from_pretrained(tmp_path / "evil.pth")


def test_missing_file_and_suffix_optional(tmp_path, small_pth):
    with pytest.raises(CheckpointError, match="not found"):
        RWKV7.from_pretrained(tmp_path / "absent.pth")
    path, config = small_pth
    assert RWKV7.from_pretrained(path.with_suffix("")).config == config


def test_mismatched_shapes(tmp_path):
    sd = random_state_dict(SMALL)
    sd["blocks.1.att.key.weight"] = torch.zeros(SMALL.n_embd, SMALL.n_embd + 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="shape mismatch for 'blocks.1.att.key.weight'"):
        RWKV7.from_pretrained(tmp_path / "bad.pth")


@pytest.mark.parametrize("name", ["blocks.1.att.w1", "blocks.1.att.v2", "blocks.0.ffn.key.weight", "head.weight"])
def test_transposed_tensors_are_refused(tmp_path, name):
    """A transposed matrix has the right number of elements but not the right shape: it must not load."""
    sd = random_state_dict(SMALL)
    sd[name] = sd[name].t().contiguous()
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=f"shape mismatch for '{name}'"):
        RWKV7.from_pretrained(tmp_path / "bad.pth")


def test_vectors_load_squeezed_or_not(tmp_path, small_pth):
    """Formats store vectors as [C] or [1, 1, C]: only size-1 dimensions may differ."""
    sd = random_state_dict(SMALL)
    sd = {k: v.reshape(-1) if v.dim() == 3 else v for k, v in sd.items()}
    torch.save(sd, tmp_path / "flat.pth")
    flat = RWKV7.from_pretrained(tmp_path / "flat.pth")
    assert flat.blocks[1].att.x_r.shape == (1, 1, SMALL.n_embd)


def test_missing_tensor(tmp_path):
    sd = random_state_dict(SMALL)
    del sd["blocks.1.ffn.value.weight"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="missing"):
        RWKV7.from_pretrained(tmp_path / "bad.pth")


def test_not_rwkv7_directory(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="not RWKV-7"):
        RWKV7.from_pretrained(tmp_path)


@pytest.fixture
def model(small_pth):
    return RWKV7.from_pretrained(small_pth[0])


def test_token_ids_out_of_range(model):
    with pytest.raises(InputError, match="token id out of range"):
        model(torch.tensor([[1, SMALL.vocab_size]]))
    with pytest.raises(InputError, match="token id out of range"):
        model(torch.tensor([[-1]]))


def test_empty_input(model):
    with pytest.raises(InputError, match="empty input"):
        model(torch.zeros(1, 0, dtype=torch.long))


def test_wrong_input_type_and_state_batch(model):
    with pytest.raises(InputError, match="integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(InputError, match="batch"):
        model(torch.zeros(2, 3, dtype=torch.long), model.zero_state(1))
