"""Executor unit tests, one process: models, plan application, activation counting."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from simplan.cost.memory import activation_bytes_per_microbatch  # noqa: E402
from simplan.errors import SimplanError  # noqa: E402
from simplan.execute.apply import apply_ac  # noqa: E402
from simplan.execute.models import RMSNorm, _SwiGLUFn, build_model, loss_fn  # noqa: E402
from simplan.execute.saved import count_saved  # noqa: E402
from simplan.execute.support import check_expressible, require_torch  # noqa: E402
from simplan.execute.worker import chunk_units  # noqa: E402
from simplan.model import build_graph, load_model  # noqa: E402
from simplan.plan import Plan  # noqa: E402


def _batch(spec, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, spec.vocab, (b, spec.seq_len + 1), generator=g)
    return x[:, :-1], x[:, 1:]


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-llama"])
def test_init_is_deterministic_and_loss_near_log_vocab(name):
    spec = load_model(name)
    x, y = _batch(spec)
    a = loss_fn(build_model(spec, seed=3)(x), y)
    b = loss_fn(build_model(spec, seed=3)(x), y)
    c = loss_fn(build_model(spec, seed=4)(x), y)
    assert a.item() == b.item()
    assert a.item() != c.item()
    # small init: the first loss is close to uniform over the vocabulary, ln(256) = 5.545
    assert abs(a.item() - torch.log(torch.tensor(256.0)).item()) < 0.1


def test_grouped_query_attention_matches_sdpa_with_repeated_kv():
    spec = load_model("tiny-llama")  # 4 heads, 2 kv heads
    core = build_model(spec).units["layer0"].attention.attn.core
    b, s, d = 2, spec.seq_len, spec.head_dim
    q = torch.randn(b, s, spec.heads * d)
    k = torch.randn(b, s, spec.kv_heads * d)
    v = torch.randn(b, s, spec.kv_heads * d)
    out = core(q, k, v)
    g = spec.heads // spec.kv_heads
    qh = q.view(b, s, -1, d).transpose(1, 2)
    kh = k.view(b, s, -1, d).transpose(1, 2).repeat_interleave(g, dim=1)
    vh = v.view(b, s, -1, d).transpose(1, 2).repeat_interleave(g, dim=1)
    ref = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True).transpose(1, 2).reshape(b, s, -1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_fused_rmsnorm_and_swiglu_backward_match_autograd():
    x = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    norm = RMSNorm(8).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    torch.autograd.gradcheck(lambda t, w: norm.__class__.forward.__globals__["_RMSNormFn"].apply(t, w, 1e-5),
                             (x, norm.weight))
    gate = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    up = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(_SwiGLUFn.apply, (gate, up))


@pytest.mark.parametrize("mode", ["selective", "full"])
def test_recomputation_gives_identical_gradients(mode):
    spec = load_model("tiny-gpt")
    x, y = _batch(spec)
    ref = build_model(spec)
    loss_fn(ref(x), y).backward()
    model = build_model(spec)
    apply_ac(model, mode)
    loss_fn(model(x), y).backward()
    for (name, p), q in zip(ref.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)


def _measured(spec, mode, b=2):
    model = build_model(spec)
    apply_ac(model, mode)
    x, y = _batch(spec, b)
    with count_saved() as c:
        loss = loss_fn(model(x), y)
    loss.backward()
    return c.total_bytes


def _predicted(spec, mode, b=2, layers=None):
    plan = Plan(micro_batch=b, global_batch=b, precision="fp32", recompute=mode)
    return activation_bytes_per_microbatch(layers or build_graph(spec).order, plan)


def test_saved_bytes_of_transformer_layers_match_korthikanti():
    """Without the embedding and head, the layers' saved tensors are Korthikanti et al.'s
    (2022, Eq. 1 without dropout: 32 s b h + 2 a s^2 b 16-bit bytes per layer), doubled for
    fp32, to within the LayerNorm statistics (mean, rstd: 8 s b bytes per norm)."""
    spec = load_model("tiny-gpt")
    model = build_model(spec)
    s, h, a, b = spec.seq_len, spec.hidden, spec.heads, 2
    x = torch.randn(b, s, h, requires_grad=True)
    with count_saved() as c:
        model.units["layer0"](x)
    korthikanti = 2 * (32 * s * b * h + 2 * a * s * s * b)
    assert c.total_bytes == pytest.approx(korthikanti, rel=0.02)
    layers = [layer for layer in build_graph(spec).order if layer.name.startswith("layer0.")]
    assert c.total_bytes == pytest.approx(_predicted(spec, "none", b, layers), rel=0.02)


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-llama"])
@pytest.mark.parametrize("mode", ["none", "selective"])
def test_saved_bytes_of_the_body_match_the_memory_model(name, mode):
    """Embedding and transformer layers (everything but the head) within 2%."""
    spec = load_model(name)
    model = build_model(spec)
    apply_ac(model, mode)
    x, _ = _batch(spec)
    with count_saved() as c:
        for unit in list(model.units.values())[:-1]:
            x = unit(x)
    body = [layer for layer in build_graph(spec).order if layer.kind != "head"]
    assert c.total_bytes == pytest.approx(_predicted(spec, mode, layers=body), rel=0.02)


@pytest.mark.parametrize("name", ["tiny-gpt", "tiny-llama"])
@pytest.mark.parametrize("mode", ["none", "selective", "full"])
def test_saved_bytes_of_whole_model_match_the_memory_model(name, mode):
    spec = load_model(name)
    assert _measured(spec, mode) == pytest.approx(_predicted(spec, mode), rel=0.02)


def test_full_recompute_keeps_layer_inputs():
    spec = load_model("tiny-gpt")
    b = 2
    none, full = _measured(spec, "none", b), _measured(spec, "full", b)
    per_layer_input = spec.seq_len * spec.hidden * b * 4  # fp32
    # the layers now keep one input each; embedding and head keep what they kept
    layer_bytes = 2 * (32 * spec.seq_len * b * spec.hidden + 2 * spec.heads * spec.seq_len**2 * b)
    assert none - full == pytest.approx(spec.layers * (layer_bytes - per_layer_input), rel=0.02)


def test_pipeline_chunks_follow_the_simulator_partition():
    spec = load_model("tiny-gpt")
    assert chunk_units(spec, Plan(pp=2, global_batch=4)) == [["embedding", "layer0", "layer1"],
                                                             ["layer2", "layer3", "head"]]
    four = chunk_units(spec, Plan(pp=2, virtual_stages=2, schedule="interleaved-1f1b", global_batch=4))
    assert [u for c in four for u in c] == ["embedding", *[f"layer{i}" for i in range(4)], "head"]
    assert len(four) == 4


@pytest.mark.parametrize("fields, message", [
    (dict(cp=2, dp=1), "plan.cp"),
    (dict(tp=2, pp=2), "tp(2) with pp(2)"),
    (dict(dp=2, tp=2), "plan.zero_stage"),
    (dict(precision="bf16"), "plan.precision"),
])
def test_plans_torch_cannot_express_are_user_errors(fields, message):
    plan = Plan(global_batch=8, **fields)
    with pytest.raises(SimplanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_expressible(load_model("tiny-gpt"), plan)


def test_missing_torch_is_a_user_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torch" else real(n, *a))
    with pytest.raises(SimplanError, match="torch: not installed"):
        require_torch()
