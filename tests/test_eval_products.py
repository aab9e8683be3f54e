"""FeatureProducts: oneDNN-packed and dense products against plain float64 matmuls."""
import pytest
import torch

from ssl_zoo.eval.products import FeatureProducts, transposed


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1001, 96, generator=g) * torch.rand(96, generator=g) * 3  # odd sizes, uneven scales
    return x, torch.randn(7, 96, generator=g), torch.randn(7, 1001, generator=g)


def test_transposed_is_the_transpose(data):
    x, _, _ = data
    assert torch.equal(transposed(x, torch.float32, rows=64), x.T)
    assert torch.equal(transposed(x, torch.bfloat16), x.T.bfloat16())


@pytest.mark.parametrize("mode", ["pack", "dense", "plain"])
@pytest.mark.parametrize("split", [None, 700])
def test_fp32_products_match_float64(data, mode, split):
    x, rows, g = data
    fp = FeatureProducts(x, torch.float32, mode, split=split)
    logits, grad = fp.logits(rows), fp.grad(g)
    assert logits.dtype == torch.float32 and logits.shape == (7, 1001) and grad.shape == (7, 96)
    ref_logits, ref_grad = rows.double() @ x.double().T, g.double() @ x.double()
    assert (logits.double() - ref_logits).abs().max() < 1e-5 * ref_logits.abs().max()
    assert (grad.double() - ref_grad).abs().max() < 1e-5 * ref_grad.abs().max()


@pytest.mark.parametrize("split", [None, 700])
def test_packed_bf16_is_bitwise_the_plain_bf16_matmul(data, split):
    """Packing changes the layout, not the arithmetic: same bf16 results as a plain matmul
    (where this CPU's oneDNN has bf16; otherwise FeatureProducts falls back to that matmul)."""
    x, rows, g = data
    fp = FeatureProducts(x, torch.bfloat16, "pack", split=split)
    assert fp.mode == "pack" or not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    xb, rb, gb = x.bfloat16(), rows.bfloat16(), g.bfloat16()
    assert torch.equal(fp.logits(rows), rb @ xb.T)
    if split is None:
        assert torch.equal(fp.grad(g), gb @ xb)
    else:  # two blocks: the partial products are summed in fp32
        parts = gb[:, :split] @ xb[:split], gb[:, split:] @ xb[split:]
        assert torch.equal(fp.grad(g), parts[0].float() + parts[1].float())


def test_head_serves_the_first_block_alone(data):
    x, rows, g = data
    fp = FeatureProducts(x, torch.float32, "pack", split=700)
    head = fp.head()
    assert head.n == 700 and fp.n == 1001
    assert torch.allclose(head.logits(rows), fp.logits(rows)[:, :700])
    assert torch.allclose(head.grad(g[:, :700]), FeatureProducts(x[:700], torch.float32, "plain").grad(g[:, :700]),
                          rtol=1e-5, atol=1e-4)


def test_unknown_mode_is_rejected(data):
    with pytest.raises(ValueError, match="expected one of"):
        FeatureProducts(data[0], torch.float32, "fast")
