import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qnets import QuadraticConv2d, QuadraticLinear
from qnets.layers import DESIGNS


def randomise(layer, seed=0):
    """Random, non-initial values for every parameter (so that g and b terms matter)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (2, 0)])
@pytest.mark.parametrize("fuse", [True, False])
def test_conv_matches_formula(compact, stride, padding, fuse):
    layer = randomise(QuadraticConv2d(3, 5, 3, stride, padding, compact=compact, fuse_rg=fuse, dtype=torch.float64))
    x = torch.randn(4, 3, 9, 9, dtype=torch.float64)
    conv = lambda inp, w, b: F.conv2d(inp, w, b, stride, padding)
    r = conv(x, layer.weight_r, layer.bias_r)
    quad = conv(x * x, layer.weight_b, layer.bias_b)
    expected = r + quad if compact else r * conv(x, layer.weight_g, layer.bias_g) + quad
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compact", [False, True])
def test_linear_matches_formula(compact):
    layer = randomise(QuadraticLinear(6, 4, compact=compact, dtype=torch.float64))
    x = torch.randn(8, 6, dtype=torch.float64)
    r = x @ layer.weight_r.T + layer.bias_r
    quad = (x * x) @ layer.weight_b.T + layer.bias_b
    expected = r + quad if compact else r * (x @ layer.weight_g.T + layer.bias_g) + quad
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    # Extra leading dimensions are features-last, like nn.Linear.
    torch.testing.assert_close(layer(x.view(2, 4, 6)), expected.view(2, 4, 4), rtol=1e-12, atol=1e-12)


def test_relinear_init_is_conventional():
    layer = QuadraticConv2d(4, 8, 3, padding=1)
    assert torch.all(layer.weight_g == 0) and torch.all(layer.bias_g == 1)
    assert torch.all(layer.weight_b == 0) and torch.all(layer.bias_b == 0) and torch.all(layer.bias_r == 0)
    # Kaiming normal (fan_in, ReLU gain): std = sqrt(2 / (4·3·3)).
    assert abs(layer.weight_r.std().item() - (2 / 36) ** 0.5) < 0.05
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight_r, None, 1, 1))


def test_naive_init_is_random():
    layer = QuadraticLinear(50, 40, init="naive")
    assert layer.weight_g.std() > 0.1 and layer.weight_b.std() > 0.1 and torch.all(layer.bias_g == 0)


def test_compact_has_no_g_and_param_names():
    names = [n for n, _ in QuadraticConv2d(2, 3, 3).named_parameters()]
    assert names == ["weight_r", "bias_r", "weight_g", "bias_g", "weight_b", "bias_b"]
    names = [n for n, _ in QuadraticConv2d(2, 3, 3, compact=True).named_parameters()]
    assert names == ["weight_r", "bias_r", "weight_b", "bias_b"]


@pytest.mark.parametrize("device", ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("make, x_shape, out_shape", [
    (lambda **kw: QuadraticConv2d(2, 3, 3, stride=2, padding=1, **kw), (1, 2, 8, 8), (1, 3, 4, 4)),
    (lambda **kw: QuadraticLinear(5, 4, compact=True, **kw), (7, 5), (7, 4))])
def test_dtype_and_device_reach_every_parameter_and_the_output(device, make, x_shape, out_shape):
    layer = make(dtype=torch.float64, device=device)
    assert {(p.device.type, p.dtype) for p in layer.parameters()} == {(device, torch.float64)}
    out = layer(torch.randn(x_shape, dtype=torch.float64, device=device))
    assert (out.device.type, out.dtype, tuple(out.shape)) == (device, torch.float64, out_shape)


def test_repr():
    layer = QuadraticConv2d(2, 3, 3, stride=2, padding=1)
    assert repr(layer) == "QuadraticConv2d(2, 3, kernel_size=3, stride=2, padding=1, compact=False)"
    assert "compact=True" in repr(QuadraticLinear(3, 2, compact=True))


@pytest.mark.parametrize("kwargs,name", [
    (dict(in_channels=0), "in_channels"), (dict(kernel_size=2.5), "kernel_size"),
    (dict(stride=0), "stride"), (dict(padding=-1), "padding"), (dict(init="zeros"), "init"),
])
def test_conv_bad_arguments(kwargs, name):
    args = dict(in_channels=2, out_channels=3, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=name):
        QuadraticConv2d(**args)


def test_linear_bad_arguments():
    with pytest.raises(ValueError, match="out_features"):
        QuadraticLinear(3, 0)


def test_backward_and_compile():
    layer = QuadraticConv2d(3, 4, 3, padding=1, init="naive")
    x = torch.randn(2, 3, 8, 8)
    layer(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    compiled = torch.compile(layer, backend="eager")  # graph capture works; no C++ toolchain needed
    torch.testing.assert_close(compiled(x), layer(x))


def _plain(layer, x):
    """The formula with autograd's own derivatives (three separate operator calls)."""
    op = (lambda inp, w, b: F.conv2d(inp, w, b, layer.stride, layer.padding)) \
        if isinstance(layer, QuadraticConv2d) else F.linear
    return op(x, layer.weight_r, layer.bias_r) * op(x, layer.weight_g, layer.bias_g) \
        + op(x * x, layer.weight_b, layer.bias_b)


@pytest.mark.parametrize("kind", ["conv", "conv-channels-last", "linear"])
def test_fused_gradients_match_formula(kind):
    """The fused layer's hand-written backward gives autograd's gradients of the formula."""
    if kind == "linear":
        layer = randomise(QuadraticLinear(5, 3, dtype=torch.float64))
        x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    else:
        layer = randomise(QuadraticConv2d(3, 4, 3, padding=1, dtype=torch.float64))
        x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
        if kind == "conv-channels-last":
            layer = layer.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
    assert layer.fuse_rg
    params = [x, *layer.parameters()]
    out = layer(x)
    weight = torch.randn_like(out)
    got = torch.autograd.grad((out * weight).sum(), params)
    want = torch.autograd.grad((_plain(layer, x) * weight).sum(), params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # Second derivatives too.
    torch.autograd.gradcheck(lambda inp: layer(inp), (x,))
    torch.autograd.gradgradcheck(lambda inp: layer(inp), (x,))


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 6, 10), (3, 5, 5)])
def test_unbatched_input_behaves_like_conv2d(compact, shape):
    torch.manual_seed(0)
    q = QuadraticConv2d(3, 4, 3, padding=1, compact=compact, init="naive")
    x = torch.randn(*shape)
    out = q(x)
    assert out.shape == nn.Conv2d(3, 4, 3, padding=1)(x).shape
    assert torch.allclose(out, q(x.unsqueeze(0)).squeeze(0), atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(in_channels=True), dict(out_channels=False), dict(kernel_size=True),
                                    dict(compact="no"), dict(compact=1)])
def test_bool_and_int_mixups_are_refused(kwargs):
    args = dict(in_channels=3, out_channels=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        QuadraticConv2d(**args)


def test_resnet_refuses_non_bool_rezero():
    from qnets.models import resnet
    for bad in ("no", 1, None):
        with pytest.raises(ValueError, match="rezero must be True or False"):
            resnet(8, "quadratic", rezero=bad)


# ----------------------------------------------------------------------------- every published design

def _direct(design, x, w, b, op):
    """A design's formula from the operator `op(x, w, b)` alone (float64), written as its source states it."""
    r0 = op(x, w["weight_r"], None) if "weight_r" in w else None
    if design == "quadratic":
        return (op(x, w["weight_r"], b["bias_r"]) * op(x, w["weight_g"], b["bias_g"])
                + op(x * x, w["weight_b"], b["bias_b"]))
    if design == "compact":
        return op(x, w["weight_r"], b["bias_r"]) + op(x * x, w["weight_b"], b["bias_b"])
    if design == "qres":  # (W1 x)(W2 x) + W1 x + b
        return r0 * op(x, w["weight_g"], None) + op(x, w["weight_r"], b["bias_r"])
    if design == "quadraour":  # (W1 x)(W2 x) + W3 x + b
        return op(x, w["weight_g"], None) * op(x, w["weight_b"], None) + op(x, w["weight_r"], b["bias_r"])
    if design == "power":
        return op(x * x, w["weight_b"], b["bias_b"])
    if design == "square":
        return r0 ** 2
    if design == "product":
        return r0 * op(x, w["weight_g"], None)
    if design == "poly":
        return op(x, w["weight_r"], b["bias_r"]) ** 2
    raise AssertionError(design)


def _unfold_conv(layer):
    """The convolution as patches times weights (F.unfold), not F.conv2d: an independent operator."""
    def op(x, weight, bias):
        n, _, h, w_ = x.shape
        k, p = layer.kernel_size[0], layer.padding[0]
        cols = F.unfold(x, k, padding=p)  # (n, c·k·k, L)
        out = weight.reshape(weight.shape[0], -1) @ cols
        out = out if bias is None else out + bias[:, None]
        return out.reshape(n, -1, h + 2 * p - k + 1, w_ + 2 * p - k + 1)
    return op


def _weights(layer):
    with torch.no_grad():
        for _, p in layer.named_parameters():
            p.copy_(torch.randn_like(p))  # every term non-zero, so that each counts
    return ({n: p for n, p in layer.named_parameters() if n.startswith("weight")},
            {n: p for n, p in layer.named_parameters() if n.startswith("bias")})


@pytest.mark.parametrize("design", [d for d in DESIGNS if d not in ("quadraour-bn", "bilinear")])
def test_each_design_computes_its_formula(design):
    torch.manual_seed(0)
    lin = QuadraticLinear(5, 3, design=design, init="naive", dtype=torch.float64)
    x = torch.randn(4, 5, dtype=torch.float64)
    w, b = _weights(lin)
    matmul = lambda x, weight, bias: x @ weight.T + (0 if bias is None else bias)  # noqa: E731
    assert torch.allclose(lin(x), _direct(design, x, w, b, matmul), rtol=1e-12, atol=1e-12)
    conv = QuadraticConv2d(2, 3, 3, padding=1, design=design, init="naive", dtype=torch.float64)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    w, b = _weights(conv)
    assert torch.allclose(conv(x), _direct(design, x, w, b, _unfold_conv(conv)), rtol=1e-12, atol=1e-12)


def test_the_bilinear_and_batch_normed_designs():
    torch.manual_seed(0)
    bil = QuadraticLinear(4, 3, design="bilinear", dtype=torch.float64)
    x = torch.randn(6, 4, dtype=torch.float64)
    want = torch.stack([torch.stack([xi @ bil.weight_b[o] @ xi for o in range(3)]) for xi in x]) + bil.bias_b
    assert torch.allclose(bil(x), want, rtol=1e-12)
    with pytest.raises(ValueError, match="linear layers only"):
        QuadraticConv2d(2, 3, 3, design="bilinear")
    bn = QuadraticLinear(4, 3, design="quadraour-bn", init="naive", dtype=torch.float64)
    n = [torch.nn.BatchNorm1d(3, dtype=torch.float64) for _ in range(3)]  # fresh: the same as the layer's
    want = n[1](x @ bn.weight_g.T) * n[2](x @ bn.weight_b.T) + n[0](x @ bn.weight_r.T + bn.bias_r)
    assert torch.allclose(bn(x), want, rtol=1e-12)


@pytest.mark.parametrize("design, count", [
    ("quadratic", 3 * (5 * 3 + 3)), ("compact", 2 * (5 * 3 + 3)), ("qres", 2 * 5 * 3 + 3), ("quadraour", 3 * 5 * 3 + 3),
    ("quadraour-bn", 3 * 5 * 3 + 3 + 3 * 2 * 3), ("power", 5 * 3 + 3), ("square", 5 * 3), ("product", 2 * 5 * 3),
    ("bilinear", 3 * 5 * 5 + 3), ("poly", 5 * 3 + 3)])
def test_each_designs_parameter_count(design, count):
    assert sum(p.numel() for p in QuadraticLinear(5, 3, design=design).parameters()) == count


@pytest.mark.parametrize("design", list(DESIGNS))
def test_a_design_starts_as_the_conventional_layer_where_it_can_and_says_so_where_not(design):
    torch.manual_seed(0)
    if design == "bilinear" or not DESIGNS[design]["start"]:
        with pytest.raises(ValueError, match="cannot start as the conventional layer"):
            QuadraticLinear(5, 3, design=design, init="relinear")
        layer = QuadraticLinear(5, 3, design=design)  # the default start is then naive: every weight random
        assert all(p.abs().sum() > 0 for n, p in layer.named_parameters() if n.startswith("weight"))
        return
    layer = QuadraticLinear(5, 3, design=design, dtype=torch.float64)
    with torch.no_grad():
        layer.bias_r.copy_(torch.randn(3))
    x = torch.randn(4, 5, dtype=torch.float64)
    assert torch.allclose(layer(x), x @ layer.weight_r.T + layer.bias_r, rtol=1e-12, atol=0)
    x.requires_grad_(True)
    layer(x).square().sum().backward()
    assert all(p.grad.abs().sum() > 0  # every weight at 0 can leave it
               for n, p in layer.named_parameters() if n.startswith("weight") and not p.abs().sum())
