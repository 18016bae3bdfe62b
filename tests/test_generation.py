"""PrefixLM (prefix-LM attention, KV cache), its text-to-text batches and loss, and decoding
(greedy, beam search, sampling): tiny random models, CPU, seeded, fast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.data.masking import next_token_targets
from lmforge.data.prefix_lm import IGNORE_INDEX, text_to_text_batch, text_to_text_prompt
from lmforge.models.decoder import PrefixLM, prefix_lm_mask
from lmforge.models.generation import EOS_ID, DecodingConfig, generate
from lmforge.models.transformer import Encoder, KVCache, MaskedLM, TransformerConfig

PAD, CLS, SEP = 0, 2, 3
VOCAB = 40


def tiny_cfg(**overrides: object) -> TransformerConfig:
    kwargs: dict[str, object] = dict(
        vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=32, dropout=0.1
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)  # type: ignore[arg-type]


def peaked_model(seed: int = 0, eos_bias: float = 0.0, **overrides: object) -> PrefixLM:
    """A random PrefixLM whose next-token distributions are far from uniform (GPT-2's init
    gives near-ties everywhere, where argmax would hinge on rounding), with non-trivial biases
    and LayerNorm parameters. ``eos_bias`` makes [SEP] likelier so rows stop at varied steps."""
    torch.manual_seed(seed)
    model = PrefixLM(tiny_cfg(**overrides))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith(("head_norm", "decoder")):  # no favourite output token
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        model.head_norm.weight.mul_(6.0)  # logits std ~ 1.5 instead of ~ 0.1
        model.decoder.bias[EOS_ID] += eos_bias
    return model


def stopping_model() -> PrefixLM:
    """A peaked model whose rows on PROMPTS end at [SEP] after varied numbers of tokens, or run
    to max_new_tokens=12, in every decoding mode (checked by the tests that rely on it)."""
    return peaked_model(seed=2, eos_bias=2.5)


PROMPTS = [
    [CLS, 7, 8, 9, 10, SEP],
    [CLS, 11, SEP],
    [CLS, 5, 6, 7, 8, 9, 10, 12, 13, SEP],
    [CLS, 20, 21, SEP],
    [CLS, 30, 9, 9, 17, SEP],
    [CLS, 14, 15, 16, SEP],
    [CLS, 33, 34, 35, 36, 37, 38, SEP],
    [CLS, 8, SEP],
]


def rescored_log_prob(
    model: PrefixLM, prompt: list[int], new: list[int], prefix_lm: bool, with_eos: bool
) -> float:
    """Log-probability of ``new`` (+ EOS) after ``prompt``, from one plain full forward."""
    continuation = new + ([EOS_ID] if with_eos else [])
    ids = torch.tensor([prompt + continuation])
    prefix = None
    if prefix_lm:
        prefix = torch.zeros_like(ids, dtype=torch.bool)
        prefix[0, : len(prompt)] = True
    with torch.no_grad():
        log_probs = model.eval()(ids, prefix_mask=prefix).log_softmax(-1)[0]
    return sum(float(log_probs[len(prompt) - 1 + i, tok]) for i, tok in enumerate(continuation))


# --- the model ---------------------------------------------------------------------------------


def test_eos_id_is_the_tokenizers_sep() -> None:
    from lmforge.data.tokenization import special_ids

    assert special_ids()["sep"] == EOS_ID == SEP
    assert special_ids()["cls"] == CLS and special_ids()["pad"] == PAD


def test_prefix_lm_loads_a_clm_pretrained_masked_lm_and_computes_its_logits() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(causal=True)
    mlm = MaskedLM(cfg).eval()
    with torch.no_grad():
        for p in mlm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = PrefixLM(tiny_cfg())  # a bidirectional config: PrefixLM makes it causal itself
    assert list(model.state_dict()) == list(mlm.state_dict())
    model.load_state_dict(mlm.state_dict())  # strict
    model.eval()
    assert model.decoder.weight is model.encoder.tok_emb.weight

    ids = torch.randint(5, VOCAB, (3, 12))
    inputs, positions, targets = next_token_targets(ids)
    _, mlm_logits = mlm(inputs, positions, targets)
    logits = model(ids)[:, :-1].reshape(-1, VOCAB)  # logits at every position but the last
    torch.testing.assert_close(logits, mlm_logits)
    torch.testing.assert_close(PrefixLM.from_masked_lm(mlm).eval()(ids), model(ids))


def test_prefix_lm_mask_on_a_hand_worked_example() -> None:
    # One left-padding column, then a 2-token prefix, then 2 causal tokens.
    attention = torch.tensor([[False, True, True, True, True]])
    prefix = torch.tensor([[False, True, True, False, False]])
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],  # the padding query sees only itself (never an empty row)
            [0, 1, 1, 0, 0],  # prefix tokens see the whole prefix, the later one too
            [0, 1, 1, 0, 0],
            [0, 1, 1, 1, 0],  # causal tokens see everything up to themselves
            [0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    torch.testing.assert_close(prefix_lm_mask(attention, prefix, 5)[0, 0], expected)
    # The last two queries with the first three columns cached: the same rows.
    torch.testing.assert_close(prefix_lm_mask(attention, prefix, 2, past_len=3)[0, 0], expected[3:])
    assert prefix_lm_mask(None, None, 5) is None  # SDPA's own causal kernel
    assert prefix_lm_mask(None, None, 1, past_len=4) is None  # one query sees every key


def test_prefix_is_bidirectional_and_the_rest_causal() -> None:
    model = peaked_model().eval()
    ids = torch.randint(5, VOCAB, (2, 10))
    prefix = torch.zeros(2, 10, dtype=torch.bool)
    prefix[:, :6] = True
    hidden = model.hidden_states(ids, prefix_mask=prefix)
    # A prefix position's state is the bidirectional encoder's over the prefix alone.
    bidirectional = Encoder(tiny_cfg()).eval()
    bidirectional.load_state_dict(model.encoder.state_dict())
    torch.testing.assert_close(hidden[:, :6], bidirectional(ids[:, :6]))
    # A later token changes nothing before it.
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1 - 5) % (VOCAB - 5) + 5
    torch.testing.assert_close(model.hidden_states(changed, prefix_mask=prefix)[:, :8], hidden[:, :8])
    # Without a prefix mask it is the causal encoder.
    causal = Encoder(tiny_cfg(causal=True)).eval()
    causal.load_state_dict(model.encoder.state_dict())
    torch.testing.assert_close(model.hidden_states(ids), causal(ids))
    assert not torch.allclose(model.hidden_states(ids)[:, :6], hidden[:, :6])


@pytest.mark.parametrize("prefix_lm", [False, True])
def test_full_forward_equals_incremental_cached_forward(prefix_lm: bool) -> None:
    """Left-padded rows of different lengths: the prompt in one cached call, then one token
    per call, give the logits of one full forward over everything."""
    model = peaked_model().eval()
    lengths, prompt_width, extra = [7, 4, 2], 7, 5
    width = prompt_width + extra
    ids = torch.randint(5, VOCAB, (3, width))
    mask = torch.ones(3, width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        mask[row, : prompt_width - n] = False
        ids[row, : prompt_width - n] = PAD
    prefix = None
    if prefix_lm:
        prefix = mask.clone()
        prefix[:, prompt_width:] = False
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(ids, mask, prefix)
        cache = model.new_cache(3, width)
        steps = [
            model(
                ids[:, :prompt_width],
                mask[:, :prompt_width],
                None if prefix is None else prefix[:, :prompt_width],
                cache=cache,
            )
        ]
        for col in range(prompt_width, width):
            steps.append(
                model(ids[:, col : col + 1], mask[:, : col + 1], None, positions[:, col : col + 1], cache)
            )
    assert cache.length == width
    incremental = torch.cat(steps, dim=1)
    real = mask  # logits at padding columns are meaningless
    torch.testing.assert_close(incremental[real], full[real], rtol=1e-4, atol=1e-4)
    assert (incremental[real] - full[real]).abs().max() < 1e-4


def test_a_padded_row_gives_the_logits_it_gives_alone() -> None:
    model = peaked_model().eval()
    row = torch.randint(5, VOCAB, (1, 6))
    other = torch.randint(5, VOCAB, (1, 11))
    prefix_alone = torch.tensor([[True] * 3 + [False] * 3])
    alone = model(row, prefix_mask=prefix_alone)[0]
    # Left padding: positions come from the mask.
    left = torch.zeros(2, 11, dtype=torch.long)
    left[0, 5:], left[1] = row, other
    mask = left != PAD
    prefix = torch.zeros_like(mask)
    prefix[0, 5:8], prefix[1, :4] = True, True
    torch.testing.assert_close(model(left, mask, prefix)[0, 5:], alone, rtol=1e-4, atol=1e-4)
    # Right padding.
    right = torch.zeros(2, 11, dtype=torch.long)
    right[0, :6], right[1] = row, other
    prefix = torch.zeros_like(mask)
    prefix[0, :3], prefix[1, :4] = True, True
    torch.testing.assert_close(model(right, right != PAD, prefix)[0, :6], alone, rtol=1e-4, atol=1e-4)


def test_kv_cache_rejects_writes_past_its_capacity() -> None:
    model = peaked_model().eval()
    cache = model.new_cache(1, 4)
    model(torch.randint(5, VOCAB, (1, 3)), cache=cache)
    with pytest.raises(ValueError, match="KVCache is full"):
        model(torch.randint(5, VOCAB, (1, 2)), cache=cache)
    assert isinstance(cache, KVCache)


# --- text-to-text batches and loss -------------------------------------------------------------


def test_text_to_text_batch_on_a_hand_worked_example() -> None:
    batch = text_to_text_batch([[10, 11], [12]], [[20, 21, 22], []])
    x = IGNORE_INDEX
    assert batch.input_ids.tolist() == [
        [CLS, 10, 11, SEP, 20, 21, 22, SEP],
        [CLS, 12, SEP, SEP, PAD, PAD, PAD, PAD],
    ]
    assert batch.attention_mask.int().tolist() == [[1] * 8, [1, 1, 1, 1, 0, 0, 0, 0]]
    assert batch.prefix_mask.int().tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]]
    # labels[t] is the token after t: the source's [SEP] predicts the first target token, the
    # last target token predicts the closing [SEP]; an empty target still learns to stop.
    assert batch.labels.tolist() == [[x, x, x, 20, 21, 22, SEP, x], [x, x, SEP, x, x, x, x, x]]
    with pytest.raises(ValueError, match="row 0: .* 8 tokens .* over max_len=7"):
        text_to_text_batch([[10, 11], [12]], [[20, 21, 22], []], max_len=7)
    with pytest.raises(ValueError, match="2 sources but 1 targets"):
        text_to_text_batch([[1], [2]], [[3]])


def test_a_prompt_is_framed_as_the_training_prefix() -> None:
    batch = text_to_text_batch([[10, 11, 12]], [[20]])
    prompt = text_to_text_prompt([10, 11, 12])
    assert prompt == batch.input_ids[0][batch.prefix_mask[0]].tolist() == [CLS, 10, 11, 12, SEP]
    assert text_to_text_prompt([10, 11, 12, 13], max_len=8, max_new_tokens=4) == [CLS, 10, 11, SEP]
    with pytest.raises(ValueError, match="leaves no room"):
        text_to_text_prompt([10], max_len=4, max_new_tokens=3)


def test_target_loss_and_log_likelihood_score_only_the_targets() -> None:
    model = peaked_model().eval()
    batch = text_to_text_batch([[10, 11, 12], [13]], [[20, 21], [22, 23, 24, 25]])
    logits = model(batch.input_ids, batch.attention_mask, batch.prefix_mask)
    scored = batch.labels != IGNORE_INDEX
    token_ll = -F.cross_entropy(logits[scored], batch.labels[scored], reduction="none")

    loss, head_logits, targets = model.target_loss(
        batch.input_ids, batch.attention_mask, batch.prefix_mask, batch.labels
    )
    torch.testing.assert_close(loss, -token_ll.mean())
    assert head_logits.shape == (8, VOCAB)
    assert targets.tolist() == [20, 21, SEP, 22, 23, 24, 25, SEP]

    log_likelihood, counts = model.target_log_likelihood(
        batch.input_ids, batch.attention_mask, batch.prefix_mask, batch.labels
    )
    assert counts.tolist() == [3, 5]
    torch.testing.assert_close(log_likelihood, torch.stack([token_ll[:3].sum(), token_ll[3:].sum()]))
    # Each row's log-likelihood is what the model gives it alone.
    alone = text_to_text_batch([[13]], [[22, 23, 24, 25]])
    alone_ll, _ = model.target_log_likelihood(
        alone.input_ids, alone.attention_mask, alone.prefix_mask, alone.labels
    )
    torch.testing.assert_close(alone_ll[0], log_likelihood[1], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_target_loss_trains_a_copy_task() -> None:
    """Source -> the same tokens reversed: learnable only by reading the whole source."""
    torch.manual_seed(0)
    model = PrefixLM(tiny_cfg(dropout=0.0))
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = loss = None
    for _ in range(150):
        sources = torch.randint(5, 12, (16, 4), generator=g).tolist()
        batch = text_to_text_batch(sources, [s[::-1] for s in sources])
        loss, _, _ = model.target_loss(batch.input_ids, batch.attention_mask, batch.prefix_mask, batch.labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
        first = first if first is not None else loss.item()
    assert first > 2.0 and loss.item() < 0.3, (first, loss.item())
    out = generate(
        model, [[CLS, 5, 6, 7, 8, SEP], [CLS, 11, 9, 10, 6, SEP]], max_new_tokens=8, prefix_lm=True
    )
    assert out.tokens == [[8, 7, 6, 5], [6, 10, 9, 11]]
    assert out.stop_reasons == ["eos", "eos"]


# --- decoding ----------------------------------------------------------------------------------

MODES = {
    "greedy": {},
    "beam": {"num_beams": 3, "length_penalty": 0.8},
    "sample": {"do_sample": True, "seed": 7, "temperature": 1.3, "top_k": 10, "top_p": 0.9},
}


@pytest.mark.parametrize("prefix_lm", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_cached_and_uncached_decoding_give_the_same_tokens(mode: str, prefix_lm: bool) -> None:
    model = stopping_model()
    options = dict(MODES[mode], max_new_tokens=12, prefix_lm=prefix_lm)
    cached = generate(model, PROMPTS, **options)
    uncached = generate(model, PROMPTS, use_cache=False, **options)
    assert cached.tokens == uncached.tokens
    assert cached.stop_reasons == uncached.stop_reasons
    torch.testing.assert_close(cached.log_probs, uncached.log_probs, rtol=1e-4, atol=1e-4)
    # The batch exercises stopping at different steps (and dropping finished rows).
    assert "eos" in cached.stop_reasons and "max_new_tokens" in cached.stop_reasons
    assert len({len(t) for t in cached.tokens}) > 2
    # The reported log-probabilities are the model's, for the tokens returned (a beam's
    # history must follow its reordering for this to hold).
    for prompt, new, reason, log_prob in zip(
        PROMPTS, cached.tokens, cached.stop_reasons, cached.log_probs, strict=True
    ):
        assert EOS_ID not in new
        expected = rescored_log_prob(model, prompt, new, prefix_lm, reason == "eos")
        assert math.isclose(log_prob, expected, rel_tol=1e-4, abs_tol=1e-4)


def test_a_prompt_decodes_the_same_alone_and_in_a_batch() -> None:
    model = stopping_model()
    for options in ({}, {"num_beams": 3, "prefix_lm": True}):
        batched = generate(model, PROMPTS, max_new_tokens=10, **options)
        for i, prompt in enumerate(PROMPTS):
            alone = generate(model, [prompt], max_new_tokens=10, **options)
            assert alone.tokens[0] == batched.tokens[i], (options, i)


def test_beam_search_with_one_beam_is_greedy() -> None:
    model = stopping_model()
    for length_penalty in (1.0, 0.0, 2.0):
        beam = generate(model, PROMPTS, max_new_tokens=12, num_beams=1, length_penalty=length_penalty)
        greedy = generate(model, PROMPTS, max_new_tokens=12)
        assert beam.tokens == greedy.tokens and beam.stop_reasons == greedy.stop_reasons
        # And the search path proper (k=1 through _beam_search) agrees too.
        from lmforge.models import generation

        n = len(PROMPTS)
        out = generation.GenerationOutput([[] for _ in PROMPTS], [""] * n, [0.0] * n, [0.0] * n)
        model.eval()
        with torch.inference_mode():
            generation._beam_search(
                model,
                PROMPTS,
                [12] * n,
                list(range(n)),
                DecodingConfig(max_new_tokens=12, num_beams=1, length_penalty=length_penalty),
                out,
            )
        assert out.tokens == greedy.tokens and out.stop_reasons == greedy.stop_reasons


def test_beam_search_finds_likelier_sequences_than_greedy() -> None:
    model = stopping_model()
    greedy = generate(model, PROMPTS, max_new_tokens=12)
    beam = generate(model, PROMPTS, max_new_tokens=12, num_beams=4, length_penalty=0.0)
    # length_penalty=0 ranks by raw log-probability; k=4 keeps greedy's path among its beams
    # until something likelier displaces it.
    assert all(b >= g - 1e-5 for b, g in zip(beam.log_probs, greedy.log_probs, strict=True))
    assert any(b > g + 1e-3 for b, g in zip(beam.log_probs, greedy.log_probs, strict=True))


def test_sampling_is_reproducible_with_a_seed_and_differs_across_seeds() -> None:
    model = peaked_model()
    options = dict(do_sample=True, max_new_tokens=15, temperature=1.5, eos_id=None)
    first = generate(model, PROMPTS, seed=1, **options)
    assert generate(model, PROMPTS, seed=1, **options).tokens == first.tokens
    assert generate(model, PROMPTS, seed=2, **options).tokens != first.tokens
    assert generate(model, PROMPTS, **options).tokens != first.tokens  # unseeded: global RNG


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    model = stopping_model()
    greedy = generate(model, PROMPTS, max_new_tokens=12)
    assert (
        generate(model, PROMPTS, max_new_tokens=12, do_sample=True, seed=3, top_k=1, temperature=5.0).tokens
        == greedy.tokens
    )
    assert (
        generate(model, PROMPTS, max_new_tokens=12, do_sample=True, seed=3, top_p=1e-6).tokens
        == greedy.tokens
    )


def test_eos_stops_a_row_and_is_excluded() -> None:
    model = peaked_model()
    free = generate(model, PROMPTS, max_new_tokens=10, eos_id=None)
    assert set(free.stop_reasons) == {"max_new_tokens"}
    assert all(len(t) == 10 for t in free.tokens)
    # Take the 4th token of the first row as the end-of-sequence id: every row stops right
    # before its first occurrence of it, and rows without it run to max_new_tokens.
    eos = free.tokens[0][3]
    stopped = generate(model, PROMPTS, max_new_tokens=10, eos_id=eos)
    for full, new, reason in zip(free.tokens, stopped.tokens, stopped.stop_reasons, strict=True):
        if eos in full:
            assert new == full[: full.index(eos)] and reason == "eos"
        else:
            assert new == full and reason == "max_new_tokens"
    assert len(stopped.tokens[0]) <= 3 and stopped.stop_reasons[0] == "eos"


def test_generation_stops_at_the_context_limit() -> None:
    model = peaked_model(max_len=16)
    long_prompt = [CLS, *range(5, 18)]  # 14 of 16 positions
    out = generate(model, [long_prompt, [CLS, 5, 6], [CLS, *range(5, 20)]], max_new_tokens=6, eos_id=None)
    assert [len(t) for t in out.tokens] == [2, 6, 0]
    assert out.stop_reasons == ["context", "max_new_tokens", "context"]
    # The tokens are those an unlimited run would give first.
    assert out.tokens[0] == generate(model, [long_prompt], max_new_tokens=2, eos_id=None).tokens[0]
    beam = generate(model, [long_prompt, [CLS, 5, 6]], max_new_tokens=6, eos_id=None, num_beams=2)
    assert [len(t) for t in beam.tokens] == [2, 6]
    assert beam.stop_reasons == ["context", "max_new_tokens"]
    with pytest.raises(
        ValueError, match="prompt 1 has 17 tokens, over the model's context max_len=16; truncate it first"
    ):
        generate(model, [[CLS], [CLS, *range(5, 21)]], max_new_tokens=2)


def test_generate_validates_its_options_and_restores_training_mode() -> None:
    model = peaked_model()
    model.train()
    generate(model, PROMPTS[:1], max_new_tokens=2)
    assert model.training
    with pytest.raises(TypeError, match="unknown options \\['beams'\\]"):
        generate(model, PROMPTS, beams=2)
    with pytest.raises(ValueError, match="top_p must be in"):
        generate(model, PROMPTS, top_p=0.0)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        generate(model, [[]])
    assert generate(model, PROMPTS[:2], max_new_tokens=0).stop_reasons == ["max_new_tokens"] * 2


def test_decoding_modules_do_not_import_training_frameworks() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    code = (
        "import lmforge.models.generation, lmforge.data.prefix_lm, sys; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} "
        "& {'lightning', 'hydra', 'mlflow', 'pytorch_lightning', 'transformers'}); "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
