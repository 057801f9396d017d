import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taps.linear import ONEDNN, FastLinear, linear, speed_up_linears


@pytest.mark.parametrize("shape", [(1, 24), (2, 24), (3, 5, 24), (300, 24), (0, 24)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_equals_f_linear(shape, bias):
    torch.manual_seed(0)
    x, w = torch.randn(shape), torch.randn(40, 24)
    b = torch.randn(40) if bias else None
    got, expected = linear(x, w, b), F.linear(x, w, b)
    assert got.shape == expected.shape == (*shape[:-1], 40)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not ONEDNN, reason="this torch build has no oneDNN")
def test_a_row_does_not_depend_on_the_rows_beside_it():
    """What makes a tree node's features those of the same token decoded alone."""
    torch.manual_seed(0)
    x, w, b = torch.randn(64, 640), torch.randn(300, 640), torch.randn(300)
    full = linear(x, w, b)
    for n in (1, 2, 3, 16, 17):
        assert torch.equal(linear(x[:n], w, b), full[:n])
        assert torch.equal(linear(x[n:], w, b), full[n:])


def test_a_modified_weight_is_packed_again():
    torch.manual_seed(0)
    x, w = torch.randn(3, 24), torch.randn(40, 24)
    linear(x, w)
    w.mul_(2)  # in place, as an optimizer step or a load_state_dict does
    torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    w.data = torch.randn(40, 24)  # new storage
    torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_other_dtypes_and_autograd_fall_back_to_f_linear():
    torch.manual_seed(0)
    x, w = torch.randn(3, 24, dtype=torch.float64), torch.randn(40, 24, dtype=torch.float64)
    assert torch.equal(linear(x, w), F.linear(x, w))
    w = torch.randn(40, 24, requires_grad=True)
    linear(torch.randn(3, 24), w).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_speed_up_linears_keeps_weights_and_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4, bias=False))
    reference = copy.deepcopy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert speed_up_linears(model) is model
    assert all(type(m) is FastLinear for m in (model[0], model[2]))
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    model(x).sum().backward()  # autograd records: F.linear runs, gradients reach the weights
    reference(x).sum().backward()
    torch.testing.assert_close(model[0].weight.grad, reference[0].weight.grad)
    copied = copy.deepcopy(model)  # a copy computes with its own weights
    with torch.no_grad():
        copied[2].weight.zero_()
        assert torch.equal(copied(x), torch.zeros(3, 4))
        assert not torch.equal(model(x), torch.zeros(3, 4))
