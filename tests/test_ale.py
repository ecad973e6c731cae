"""ALE-Edit's Q,K injection: which steps inject, and what the target branch's self-attention reads."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from ale_edit.methods.ale import AleController, SelfAttentionInjection
from ale_edit.processors import to_heads as _to_heads
from ale_edit.steps import exceeds


def injection_active(schedule, k, steps):
    return k in exceeds(schedule, steps)


def make_attention() -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=12, heads=3, dim_head=4).eval()


@pytest.mark.parametrize("schedule,steps,expected", [
    (1.0, 15, list(range(14))), (0.5, 15, list(range(7))), (0.6, 15, list(range(8))), (0.0, 15, []),
])
def test_injection_schedule(schedule, steps, expected):
    assert [k for k in range(steps) if injection_active(schedule, k, steps)] == expected


def test_self_attention_injection_uses_source_qk_and_own_v():
    attn = make_attention()
    torch.manual_seed(2)
    x = torch.randn(8, 6, 12)  # 4 branches x B=2
    ctl = AleController(num_steps=10, schedules=[1.0, 0.0])
    proc = SelfAttentionInjection(ctl)
    ctl.begin_step(0)
    out = proc.attend(attn, x, None)
    q, k, v = (_to_heads(attn, f(x)) for f in (attn.to_q, attn.to_k, attn.to_v))
    plain = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(8, 6, 12)
    # Edit 0 injects (schedule 1.0), edit 1 does not (0.0). Chunks: su=0..1, tu=2..3, sc=4..5, tc=6..7.
    for src, tgt in ((0, 2), (4, 6)):
        injected = F.scaled_dot_product_attention(q[src], k[src], v[tgt]).transpose(0, 1).reshape(6, 12)
        assert torch.allclose(out[tgt], injected, atol=1e-6)
        assert not torch.allclose(out[tgt], plain[tgt], atol=1e-4)
        assert torch.allclose(out[tgt + 1], plain[tgt + 1], atol=1e-6)  # edit 1: untouched
    for source_chunk in (0, 1, 4, 5):
        assert torch.allclose(out[source_chunk], plain[source_chunk], atol=1e-6)


