from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tms_slt.models import (
    activation_names,
    forward,
    get_activation,
    init_params,
    loss_and_grad,
    loss_hessian,
    reconstruction_loss,
)


@settings(max_examples=25, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=3),
    m=st.integers(1, 3),
    n=st.integers(2, 6),
    batch=st.integers(1, 5),
)
def test_forward_shapes_and_matches_per_model_loop(lead, m, n, batch):
    g = torch.Generator().manual_seed(0)
    W, b = init_params(tuple(lead), m, n, generator=g)
    b = b + 0.1
    x = torch.rand((*lead, batch, n), generator=g)
    out = forward(W, b, x)
    assert out.shape == (*lead, batch, n)
    flat_W, flat_b, flat_x = W.reshape(-1, m, n), b.reshape(-1, n), x.reshape(-1, batch, n)
    for i in range(flat_W.shape[0]):
        expected = torch.relu(flat_x[i] @ flat_W[i].T @ flat_W[i] + flat_b[i])
        torch.testing.assert_close(out.reshape(-1, batch, n)[i], expected)
    assert reconstruction_loss(W, b, x).shape == tuple(lead)


def test_loss_is_importance_weighted_mean_of_summed_squares():
    W = torch.tensor([[1.0, 0.0, 0.5]])
    b = torch.tensor([0.0, -0.1, 0.0])
    x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    imp = torch.tensor([1.0, 0.5, 0.25])
    recon = torch.relu(x @ W.T @ W + b)
    expected = ((x - recon) ** 2 * imp).sum(-1).mean()
    torch.testing.assert_close(reconstruction_loss(W, b, x, imp), expected)


def test_swish_tends_to_relu():
    x = torch.linspace(-3, 3, 101)
    err = [
        (get_activation("swish", sharpness=s)(x) - torch.relu(x)).abs().max() for s in (1, 10, 100)
    ]
    assert err[0] > err[1] > err[2] and err[2] < 0.01


@pytest.mark.parametrize("name", activation_names())
def test_analytic_gradient_matches_autograd(name):
    g = torch.Generator().manual_seed(1)
    act = get_activation(name, sharpness=3.0)
    W = torch.randn(3, 2, 2, 5, generator=g, dtype=torch.float64)
    b = 0.1 * torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    x = torch.rand(3, 2, 7, 5, generator=g, dtype=torch.float64)
    imp = torch.rand(5, generator=g, dtype=torch.float64)
    Wl, bl = W.clone().requires_grad_(), b.clone().requires_grad_()
    loss = reconstruction_loss(Wl, bl, x, imp, act)
    gW, gb = torch.autograd.grad(loss.sum(), (Wl, bl))
    l2, dW, db = loss_and_grad(W, b, x, imp, act)
    torch.testing.assert_close(l2, loss.detach())
    torch.testing.assert_close(dW, gW)
    torch.testing.assert_close(db, gb)


@pytest.mark.parametrize("name", activation_names())
def test_closed_form_hessian_matches_autograd(name):
    """`loss_hessian` against torch's Hessian of `reconstruction_loss`, per model, with the
    data shared across the leading dim (broadcast, as the LLC probes pass it), with and
    without the bias block, for every activation (their second derivatives included)."""
    g = torch.Generator().manual_seed(2)
    act = get_activation(name, sharpness=3.0)
    W = torch.randn(3, 2, 5, generator=g, dtype=torch.float64)
    b = 0.3 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    x = torch.rand(40, 5, generator=g, dtype=torch.float64)
    imp = torch.rand(5, generator=g, dtype=torch.float64)
    H = loss_hessian(W, b, x, imp, act)
    H_W = loss_hessian(W, b, x, imp, act, with_bias=False)
    assert H.shape == (3, 15, 15) and H_W.shape == (3, 10, 10)
    for i in range(3):

        def loss(w, i=i):
            return reconstruction_loss(w[:10].reshape(2, 5), w[10:], x, imp, act)

        exact = torch.autograd.functional.hessian(loss, torch.cat([W[i].ravel(), b[i]]))
        torch.testing.assert_close(H[i], exact, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(H_W[i], exact[:10, :10], rtol=1e-10, atol=1e-12)


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        get_activation("tanh")
