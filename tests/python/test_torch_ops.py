"""cuattn's torch.library custom ops: registration and fake implementations (torch.library.opcheck),
results against the float64 oracle, torch.compile(fullgraph=True) equal to eager (CPU with the
inductor compiler; GPU with CUDA graphs), the refusals (tensors that require grad, block masks
under tracing). Skipped without PyTorch; the GPU cases without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cuattn  # noqa: E402
import cuattn._torch_ops  # noqa: E402,F401  (registers the ops)
import oracle  # noqa: E402
from conftest import assert_close, assert_lse  # noqa: E402
from cuattn import compat  # noqa: E402

ops = torch.ops.cuattn


def gpu_ready() -> bool:
    return torch.cuda.is_available() and cuattn.cuda_available()


needs_gpu = pytest.mark.skipif(not gpu_ready(),
                               reason="no CUDA GPU usable by both PyTorch and cuattn")


@pytest.fixture
def gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(1 << 62)))


def randn(gen, *shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)


def paged(gen, lens, page, hkv, d, *, device="cpu", dtype=torch.float32, spare=1):
    """Caches [num_blocks, page, hkv, d] with the pages of each sequence in a random order (plus
    `spare` pages a sequence), block_table int32, seq_lens int32."""
    npages = [-(-n // page) + spare for n in lens]
    perm = torch.randperm(sum(npages) + 2, generator=gen).to(torch.int32)
    table = torch.zeros(len(lens), max(npages), dtype=torch.int32)
    at = 0
    for b, n in enumerate(npages):
        table[b, :n] = perm[at:at + n]
        at += n
    shape = (len(perm), page, hkv, d)
    kc, vc = (randn(gen, *shape, dtype=dtype, device=device) for _ in range(2))
    return kc, vc, table.to(device), torch.tensor(lens, dtype=torch.int32, device=device)


def attention_args(q, k, v, causal=False, window=None, scale=None, softcap=0.0, cu_q=None,
                   cu_k=None, layout="bshd", return_lse=True):
    """The arguments of torch.ops.cuattn.attention, in order."""
    return (q, k, v, causal, window, scale, softcap, None, cu_q, cu_k, None, None, layout,
            return_lse, False)


def paged_args(q, kc, vc, table, lens, window=None, return_lse=True, k_scale_value=None):
    """The arguments of torch.ops.cuattn.paged_attention, in order."""
    return (q, kc, vc, table, lens, None, 0.0, window, None, None, k_scale_value, None, None,
            "NHD", None, return_lse, False)


# ---- routing ------------------------------------------------------------------------------------


def test_eager_calls_do_not_use_the_ops(gen, monkeypatch):
    import inspect

    for name in ("attention", "sliding_window_attention", "paged_attention", "append_paged_kv"):
        assert inspect.signature(getattr(cuattn, name)) == inspect.signature(
            getattr(cuattn._api, name))
        monkeypatch.setattr(cuattn._torch_ops, name, None)  # a routed call would fail
    q, k = randn(gen, 1, 4, 2, 16), randn(gen, 1, 6, 2, 16)
    ref, _ = oracle.attention_ref(q.numpy(), k.numpy(), k.numpy(), window=(2, 2))
    assert_close(cuattn.attention(q, k, k, window=2), ref, "float32")
    assert_close(cuattn.sliding_window_attention(q, k, k, 2), ref, "float32")


# ---- registration, fake implementations ---------------------------------------------------------


def test_opcheck(gen):
    q, k, v = randn(gen, 2, 5, 4, 16), randn(gen, 2, 7, 2, 16), randn(gen, 2, 7, 2, 8)
    for args in (attention_args(q, k, v, True, [3]), attention_args(q, k, v, return_lse=False),
                 attention_args(*(x.transpose(1, 2) for x in (q, k, v)), False, [2, 1],
                                layout="bhsd", scale=0.5, softcap=3.0)):
        torch.library.opcheck(ops.attention.default, args)
    cu = torch.tensor([0, 3, 10], dtype=torch.int32)
    torch.library.opcheck(ops.attention.default,
                          attention_args(q.reshape(10, 4, 16), k.reshape(14, 2, 16)[:10],
                                         v.reshape(14, 2, 8)[:10], True, None, cu_q=cu, cu_k=cu))
    kc, vc, table, lens = paged(gen, [5, 12, 1], 4, 2, 16)
    torch.library.opcheck(ops.paged_attention.default,
                          paged_args(randn(gen, 3, 4, 16), kc, vc, table, lens))
    torch.library.opcheck(ops.paged_attention.default,
                          paged_args(randn(gen, 3, 2, 4, 16), kc, vc, table, lens + 1, [3], False,
                                     0.5))
    cu = torch.tensor([0, 1, 5, 5], dtype=torch.int32)  # a mixed batch: lse [Hq, total_q]
    torch.library.opcheck(ops.paged_attention.default,
                          paged_args(randn(gen, 5, 4, 16), kc, vc, table, lens + 4) + (cu, 4))
    slots = torch.tensor([0, 5, -1, 39])
    torch.library.opcheck(ops.append_paged_kv.default,
                          (randn(gen, 4, 2, 16), randn(gen, 4, 2, 16), kc, vc, slots, None, None,
                           None, None, "NHD", None, False))


# ---- the ops' results ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
@pytest.mark.parametrize("causal, window, oracle_window", [
    (False, None, None), (True, [5], 5), (False, [5], 5), (False, [3, -1], (3, -1))])
def test_attention_op(gen, layout, causal, window, oracle_window):
    q, k, v = randn(gen, 2, 7, 4, 32), randn(gen, 2, 129, 2, 32), randn(gen, 2, 129, 2, 16)
    if layout == "bhsd":
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    out, lse = ops.attention(*attention_args(q, k, v, causal, window, scale=0.3, layout=layout))
    ref, ref_lse = oracle.attention_ref(q.numpy(), k.numpy(), v.numpy(), causal=causal,
                                        window=oracle_window, scale=0.3, layout=layout)
    assert_close(out, ref, "float32")
    assert_lse(lse, ref_lse, "float32")
    out, lse = ops.attention(*attention_args(q, k, v, causal, window, scale=0.3, layout=layout,
                                             return_lse=False))
    assert_close(out, ref, "float32")
    assert lse.shape == (0,)


def test_paged_attention_mixed_op(gen):
    """The paged op with its trailing cu_seqlens_q / max_seqlen_q: a decode beside a chunk."""
    kc, vc, table, seq = paged(gen, [9, 30, 2], 16, 2, 32)
    cu = torch.tensor([0, 1, 13, 13], dtype=torch.int32)
    q = randn(gen, 13, 4, 32)
    out, lse = ops.paged_attention(*paged_args(q, kc, vc, table, seq, window=[20]), cu, None)
    ref, ref_lse = oracle.paged_ref(q.numpy(), kc.numpy(), vc.numpy(), table.numpy(), seq.numpy(),
                                    window=20, cu_seqlens_q=cu.numpy())
    assert out.shape == (13, 4, 32) and lse.shape == (4, 13)
    assert_close(out, ref, "float32")
    assert_lse(lse, ref_lse, "float32")


def test_paged_attention_and_append_ops(gen):
    lens = [1, 17, 40]
    kc, vc, table, seq = paged(gen, lens, 16, 2, 64)
    q = randn(gen, 3, 2, 8, 64)
    # the two new tokens of each sequence go after its cached ones
    k_new, v_new = randn(gen, 6, 2, 64), randn(gen, 6, 2, 64)
    pos = (seq[:, None] + torch.arange(2)).reshape(-1)
    slots = (table.long()[torch.arange(3).repeat_interleave(2), pos // 16] * 16 + pos % 16)
    ops.append_paged_kv(k_new, v_new, kc, vc, slots, None, None, None, None, "NHD", None, False)
    out, lse = ops.paged_attention(*paged_args(q, kc, vc, table, seq + 2, window=[9]))
    ref, ref_lse = oracle.paged_ref(q.numpy(), kc.numpy(), vc.numpy(), table.numpy(),
                                    (seq + 2).numpy(), window=9)
    assert_close(out, ref, "float32")
    assert_lse(lse, ref_lse, "float32")
    flat = kc.reshape(-1, 2, 64)
    assert torch.equal(flat[slots], k_new) and torch.equal(vc.reshape(-1, 2, 64)[slots], v_new)


# ---- refusals -----------------------------------------------------------------------------------


def test_requires_grad_is_refused(gen):
    q, k = randn(gen, 1, 4, 2, 16), randn(gen, 1, 4, 2, 16)
    w = q.clone().requires_grad_()
    with pytest.raises(ValueError, match="no backward pass"):
        ops.attention(*attention_args(w, k, k))
    with pytest.raises(ValueError, match="k requires grad"):
        ops.attention(*attention_args(q, k.clone().requires_grad_(), k))
    with torch.no_grad():
        ops.attention(*attention_args(w, k, k))
    with torch.inference_mode():
        ops.attention(*attention_args(w, k, k))

    def f(q, k):
        return cuattn.attention(q, k, k)

    with pytest.raises(Exception, match="no backward pass"):
        torch.compile(f, fullgraph=True, backend="aot_eager")(w, k)
    with torch.no_grad():
        assert torch.equal(torch.compile(f, fullgraph=True, backend="aot_eager")(w, k), f(q, k))


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace")
def test_block_mask_under_compile(gen):
    q, k = randn(gen, 1, 130, 2, 16), randn(gen, 1, 200, 2, 16)
    bm = cuattn.create_block_mask(lambda b, h, i, j: (i + j) % 3 != 0, None, None, 130, 200)

    def f(q, k):
        return cuattn.attention(q, k, k, block_mask=bm) * 2

    with pytest.raises(Exception, match="block_mask"):
        torch.compile(f, fullgraph=True, backend="aot_eager")(q, k)
    # Without fullgraph the call runs eagerly through a graph break.
    assert torch.equal(torch.compile(f, backend="aot_eager")(q, k), f(q, k))


# ---- torch.compile ------------------------------------------------------------------------------


class Model(torch.nn.Module):
    """Writes new tokens into a paged cache (K and V views of one buffer), decodes over it, and
    runs dense attention (cuattn's and the drop-ins) between ordinary torch operations. With
    mutate=False it neither appends nor writes out= (CUDA graph trees skip graphs that mutate
    their inputs)."""

    def __init__(self, mutate=True):
        super().__init__()
        self.mutate = mutate

    def forward(self, x, k, v, kv, k_new, v_new, slots, table, seq, q_dec, out_buf):
        if self.mutate:
            cuattn.append_paged_kv(k_new, v_new, kv[:, 0], kv[:, 1], slots)
        dec, dec_lse = cuattn.paged_attention(q_dec * 0.5, kv[:, 0], kv[:, 1], table, seq,
                                              window=33, return_lse=True)
        q = torch.nn.functional.gelu(x)
        o, lse = cuattn.attention(q, k, v, causal=True, window=(17, 0), return_lse=True)
        if self.mutate:
            out_buf = cuattn.sliding_window_attention(q, k, v, 5, out=out_buf)
        else:
            out_buf = cuattn.sliding_window_attention(q, k, v, 5)
        s = compat.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)),
                                                is_causal=True, enable_gqa=True)
        f = compat.flash_attn_func(q, k, v, causal=True, window_size=(7, -1), softcap=5.0)
        return dec + 1, dec_lse, o, lse, s.transpose(1, 2) - f, out_buf * 3


def model_inputs(gen, device="cpu", dtype=torch.float32):
    lens = [3, 40, 70]
    kc, vc, table, seq = paged(gen, lens, 16, 2, 64, device=device, dtype=dtype)
    kv = torch.stack([kc, vc], dim=1)  # [N, 2, page, Hkv, D]
    pos = seq.long()[:, None] + torch.arange(2, device=device)
    rows = torch.arange(3, device=device)[:, None]
    slots = (table.long()[rows, pos // 16] * 16 + pos % 16).reshape(-1)
    def r(*shape):
        return randn(gen, *shape, dtype=dtype, device=device)

    x = r(2, 50, 8, 64)
    return (x, r(2, 77, 2, 64), r(2, 77, 2, 64), kv, r(6, 2, 64), r(6, 2, 64), slots, table,
            seq + 2, r(3, 8, 64), torch.empty_like(x))


def host(t):
    """A host NumPy copy (floating point as float32)."""
    return (t.float() if t.is_floating_point() else t).cpu().numpy()


def clone(args):
    return tuple(a.clone() for a in args)


def check_compiled(gen, compiled, model, device="cpu", dtype=torch.float32, runs=1):
    name = str(dtype).replace("torch.", "")
    for _ in range(runs):  # fresh values each run (CUDA graphs replay with new inputs)
        args = model_inputs(gen, device, dtype)
        eager_args, compiled_args = clone(args), clone(args)
        want = model(*eager_args)
        got = compiled(*compiled_args)
        for w, g in zip(want, got):
            assert_close(g, host(w), name)
        # the cache writes and out= reached the caller's tensors (the compiler may round the
        # gelu before attention differently: out= is close, not equal)
        assert torch.equal(compiled_args[3], eager_args[3])
        assert_close(compiled_args[-1], host(eager_args[-1]), name)
    # and eager itself matches the oracle (decode after the append)
    x, k, v, kv, *_, table, seq, q_dec, _ = eager_args
    ref, _ = oracle.paged_ref(*(host(t) for t in (q_dec * 0.5, kv[:, 0], kv[:, 1], table, seq)),
                              window=33)
    assert_close(want[0] - 1, ref, name)


def test_compile_fullgraph_aot_eager(gen):
    check_compiled(gen, torch.compile(Model(), fullgraph=True, backend="aot_eager"), Model())


def test_compile_fullgraph_inductor_cpu(gen):
    check_compiled(gen, torch.compile(Model(), fullgraph=True), Model(), runs=2)


def test_compile_compat_masks_and_kvcache(gen):
    """The drop-ins' framework-side work traces too: SDPA's masks (the materialised path while
    tracing) and flash_attn_with_kvcache's slot arithmetic before the append and the decode."""

    def f(q, k, v, bool_mask, float_mask, qd, kc, vc, table, lens, k_new, v_new):
        a = compat.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask, enable_gqa=True)
        b = compat.scaled_dot_product_attention(q, k, v, attn_mask=float_mask, enable_gqa=True)
        c, lse = compat.flash_attn_with_kvcache(qd, kc, vc, k_new, v_new, cache_seqlens=lens,
                                                block_table=table, causal=True,
                                                return_softmax_lse=True)
        return a, b, c, lse

    q, k, v = randn(gen, 2, 4, 33, 64), randn(gen, 2, 2, 70, 64), randn(gen, 2, 2, 70, 64)
    bool_mask = torch.rand(2, 1, 33, 70, generator=gen) < 0.7
    float_mask = torch.where(bool_mask, randn(gen, 2, 1, 33, 70), -torch.inf)
    kc, vc, table, lens = paged(gen, [5, 40], 16, 2, 64)
    args = (q, k, v, bool_mask, float_mask, randn(gen, 2, 2, 4, 64), kc, vc, table, lens,
            randn(gen, 2, 2, 2, 64), randn(gen, 2, 2, 2, 64))
    eager_args, compiled_args = clone(args), clone(args)
    want = f(*eager_args)
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(*compiled_args)
    for w, g in zip(want, got):
        assert_close(g, w.numpy(), "float32")
    for i in (6, 7):  # the caches
        assert torch.equal(compiled_args[i], eager_args[i])


def test_compile_dynamic_shapes(gen):
    def f(q, k):
        return cuattn.attention(q, k, k, causal=True, return_lse=True)

    c = torch.compile(f, fullgraph=True, dynamic=True, backend="aot_eager")
    for sq, sk in ((5, 9), (13, 40), (1, 3)):
        q, k = randn(gen, 2, sq, 4, 16), randn(gen, 2, sk, 2, 16)
        for w, g in zip(f(q, k), c(q, k)):
            assert torch.equal(w, g)


def test_export(gen):
    class M(torch.nn.Module):
        def forward(self, q, k):
            return cuattn.attention(q, k, k, causal=True, window=4) + 1

    q, k = randn(gen, 1, 5, 2, 16), randn(gen, 1, 9, 2, 16)
    ep = torch.export.export(M(), (q, k))
    assert ops.attention.default in [n.target for n in ep.graph.nodes]
    assert torch.equal(ep.module()(q, k), M()(q, k))

# ---- GPU: CUDA graphs ---------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mutate", [False, True])
def test_compile_reduce_overhead_gpu(gen, dtype, mutate):
    model = Model(mutate)
    compiled = torch.compile(model, fullgraph=True, mode="reduce-overhead")
    check_compiled(gen, compiled, model, "cuda", dtype, runs=3)



@needs_gpu
def test_cuda_graph_capture_of_ops(gen):
    dev, dt = "cuda", torch.bfloat16
    q, k, v = (randn(gen, *s, dtype=dt, device=dev) for s in ((2, 65, 8, 128), (2, 300, 2, 128),
                                                               (2, 300, 2, 128)))
    kc, vc, table, seq = paged(gen, [33, 700], 16, 2, 128, device=dev, dtype=dt)
    qd = randn(gen, 2, 8, 128, dtype=dt, device=dev)
    k_new, v_new = (randn(gen, 2, 2, 128, dtype=dt, device=dev) for _ in range(2))
    pos = seq.long() - 1  # the last token of each sequence is the new one
    slots = table.long()[torch.arange(2, device=dev), pos // 16] * 16 + pos % 16

    def calls():
        ops.append_paged_kv(k_new, v_new, kc, vc, slots, None, None, None, None, "NHD", None, False)
        return (*ops.attention(*attention_args(q, k, v, True)),
                *ops.paged_attention(*paged_args(qd, kc, vc, table, seq)))

    torch.cuda.synchronize()
    # Warm-up and capture on one stream: without a plan, paged decode sizes its split-KV
    # workspace (cached per stream) in the warm-up, and refuses to allocate one while capturing.
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        calls()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s):
        o, lse, od, lsed = calls()
    for _ in range(2):
        for x in (q, k, v, kc, vc, qd, k_new, v_new):
            x.copy_(torch.randn(x.shape, generator=gen).to(dt))
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(kc.reshape(-1, 2, 128)[slots], k_new)
        assert torch.equal(vc.reshape(-1, 2, 128)[slots], v_new)
        ref, ref_lse = oracle.attention_ref(host(q), host(k), host(v), causal=True)
        assert_close(o, ref, "bfloat16")
        assert_lse(lse, ref_lse, "bfloat16")
        ref, ref_lse = oracle.paged_ref(*(host(t) for t in (qd, kc, vc, table, seq)))
        assert_close(od, ref, "bfloat16")
        assert_lse(lsed, ref_lse, "bfloat16")
