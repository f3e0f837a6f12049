"""PyTorch parity: the same weights give the same outputs and the same gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from grubench.interop import from_torch, to_torch  # noqa: E402
from grubench.layers import stack  # noqa: E402

B, T, D, H = 3, 11, 5, 6
CLASSES = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM, "rnn": torch.nn.RNN}
CASES = [(k, depth, bf) for k in CLASSES for depth in (1, 2) for bf in (True, False)]


def torch_rnn(kind, depth, batch_first, seed=0):
    torch.manual_seed(seed)
    rnn = CLASSES[kind](D, H, num_layers=depth, batch_first=batch_first)
    with torch.no_grad():  # move biases off torch's small uniform init so they matter
        for name, p in rnn.named_parameters():
            if "bias" in name:
                p.uniform_(-0.5, 0.5)
    return rnn


def layout(x, batch_first):
    return x if batch_first else np.swapaxes(x, 0, 1).copy()


@pytest.mark.parametrize("kind,depth,batch_first", CASES)
def test_outputs_and_gradients_match_torch(kind, depth, batch_first):
    rnn = torch_rnn(kind, depth, batch_first)
    rng = np.random.default_rng(0)
    x = layout(rng.standard_normal((B, T, D)).astype(np.float32), batch_first)
    probe = rng.standard_normal(x.shape[:-1] + (H,)).astype(np.float32)

    xt = torch.from_numpy(x)
    out, _ = rnn(xt)
    (out * torch.from_numpy(probe)).sum().backward()

    ours = from_torch(rnn)
    ys, _ = ours(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(ys), out.detach().numpy(), atol=1e-5, rtol=1e-5)

    graphdef, params = nnx.split(ours)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(jnp.asarray(x))[0] * probe)

    grads = jax.grad(loss)(params)
    for k in range(depth):
        g = grads["layers"][k]["cell"]
        pairs = (
            ("wi", "weight_ih", True),
            ("wh", "weight_hh", True),
            ("bi", "bias_ih", False),
            ("bh", "bias_hh", False),
        )
        for ours_name, torch_name, transpose in pairs:
            want = getattr(rnn, f"{torch_name}_l{k}").grad.numpy()
            got = np.asarray(g[ours_name][...])
            np.testing.assert_allclose(
                got.T if transpose else got,
                want,
                atol=1e-5,
                rtol=1e-5,
                err_msg=f"{ours_name} of layer {k}",
            )


@pytest.mark.parametrize("kind", list(CLASSES))
def test_round_trip_through_torch(kind):
    ours = stack(kind, D, H, 2, rngs=nnx.Rngs(4))
    back = from_torch(to_torch(ours))
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    np.testing.assert_allclose(ours(x)[0], back(x)[0], atol=1e-6)
    rnn = to_torch(ours)
    assert rnn.batch_first and rnn.num_layers == 2
    out, _ = rnn(torch.from_numpy(np.array(x)))
    np.testing.assert_allclose(ours(x)[0], out.detach().numpy(), atol=1e-5)


def test_unsupported_torch_modules_are_refused():
    with pytest.raises(ValueError, match="bidirectional"):
        from_torch(torch.nn.GRU(D, H, bidirectional=True))
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(torch.nn.LSTM(D, H, proj_size=2))
    with pytest.raises(TypeError, match="expected torch.nn.GRU"):
        from_torch(torch.nn.Linear(D, H))
    with pytest.raises(ValueError, match="reset-after"):
        to_torch(stack("gru", D, H, 1, rngs=nnx.Rngs(0), reset_after=False))
    with pytest.raises(ValueError, match="reset-after"):
        to_torch(stack("gru_v1", D, H, 1, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="MinGRUCell has no torch peer"):
        to_torch(stack("mingru", D, H, 1, rngs=nnx.Rngs(0)))
