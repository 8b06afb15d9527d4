"""Prompt encoder on the bundled all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import pytest
import torch

from wta_core.text import TEXT_DIM, PromptEncoder, unconditional_embedding


@pytest.fixture(scope="module")
def encoder() -> PromptEncoder:
    return PromptEncoder()


def test_encode_shape_dtype_norm(encoder):
    embeddings = encoder.encode(["blues", "a string quartet"])
    assert embeddings.shape == (2, TEXT_DIM)
    assert embeddings.dtype == torch.float32
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)


def test_encode_independent_of_other_prompts(encoder):
    together = encoder.encode(["a short prompt", "a much longer prompt about a fiddle tune"])
    alone = encoder.encode(["a much longer prompt about a fiddle tune"])
    assert torch.equal(together[1], alone[0])


def test_encode_repeatable(encoder):
    assert torch.equal(encoder.encode(["jazz"]), encoder.encode(["jazz"]))


def test_encode_distinguishes_prompts(encoder):
    first, second = encoder.encode(["chorale", "heavy metal"])
    assert not torch.equal(first, second)


def test_encode_rejects_single_string(encoder):
    with pytest.raises(TypeError, match="list"):
        encoder.encode("jazz")


def test_encode_empty_list(encoder):
    assert encoder.encode([]).shape == (0, TEXT_DIM)


def test_unconditional_is_zero():
    embedding = unconditional_embedding(3)
    assert embedding.shape == (3, TEXT_DIM)
    assert torch.count_nonzero(embedding) == 0
