import torch

from hellolondon.config import REGULAR, SLM, ModelConfig
from hellolondon.model import GPT, KVCache


def _meta_model(cfg: ModelConfig) -> GPT:
    with torch.device("meta"):
        return GPT(cfg)


def _decayed(model: GPT) -> tuple[int, int]:
    mats = [p for p in model.parameters() if p.dim() >= 2]
    return len(mats), sum(p.numel() for p in mats)


def test_slm_and_regular_counts_match_the_seed():
    # the seed's quick tip, with the 30,000-token vocabulary
    slm, regular = _meta_model(SLM.model), _meta_model(REGULAR.model)
    assert _decayed(slm) == (50, 108_761_088)
    assert _decayed(regular) == (98, 333_758_464)
    assert regular.num_params() == 332_760_064  # "Model parameters: 332,760,064"
    assert slm.num_params() == 107_993_856
    assert slm.num_params(non_embedding=False) == 108_780_288


def test_flops_per_token_by_hand():
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=8, block_size=16, vocab_size=10)
    m = GPT(cfg)
    # non-embedding parameters: wte 10*8, per block 2 LN gains of 8 + 8*24 + 8*8 + 8*32 + 32*8, final LN 8
    n = 80 + 2 * (16 + 192 + 64 + 256 + 256) + 8
    assert m.num_params() == n
    assert m.flops_per_token() == 6 * n + 12 * 2 * 2 * 4 * 16


def test_weights_are_tied_and_projections_scaled():
    torch.manual_seed(0)
    m = GPT(ModelConfig(n_layer=8, n_head=4, n_embd=256, block_size=32, vocab_size=100))
    assert m.lm_head.weight is m.transformer.wte.weight
    std = m.transformer.h[0].mlp.c_proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 8) ** 0.5) < 0.002


def test_loss_at_init_is_near_uniform():
    torch.manual_seed(0)
    m = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=500))
    x, y = torch.randint(0, 500, (2, 4, 16))
    _, loss = m(x, y)
    assert abs(loss.item() - torch.log(torch.tensor(500.0)).item()) < 0.2


def test_kv_cache_gives_the_full_forward_logits():
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=24, vocab_size=50)
    m = GPT(cfg).eval()
    x = torch.randint(0, 50, (2, 20))
    full, _ = m(x)
    cache = KVCache(cfg, 2, 20, "cpu", torch.float32)
    parts = [m(x[:, :7], cache=cache)[0]]  # a prompt, then a chunk, then one token at a time
    parts.append(m(x[:, 7:12], cache=cache)[0])
    parts += [m(x[:, t : t + 1], cache=cache)[0] for t in range(12, 20)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


def test_context_longer_than_the_model_is_refused():
    m = GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=4, vocab_size=10))
    try:
        m(torch.zeros(1, 5, dtype=torch.long))
    except ValueError as exc:
        assert "context" in str(exc)
    else:
        raise AssertionError("a 5-token input to a 4-token model must fail")
