"""The paper's expressivity examples: one quadratic neuron separates XOR and a disk exactly."""
import torch

from qnets import QuadraticLinear


def neuron(**values):
    q = QuadraticLinear(2, 1, dtype=torch.float64)
    with torch.no_grad():
        for p in q.parameters():
            p.zero_()
        q.bias_g.fill_(1.0)
        for name, v in values.items():
            getattr(q, name).copy_(torch.tensor(v, dtype=torch.float64))
    return q


def test_one_quadratic_neuron_computes_xor():
    x = torch.tensor([[-1., -1.], [-1., 1.], [1., -1.], [1., 1.]], dtype=torch.float64)
    q = neuron(weight_r=[[1., 0.]], weight_g=[[0., -1.]], bias_g=[0.])
    torch.testing.assert_close(q(x).squeeze(1), -x[:, 0] * x[:, 1])  # q = -x1·x2
    assert torch.equal(q(x).squeeze(1) > 0, x[:, 0] * x[:, 1] < 0)


def test_one_quadratic_neuron_separates_a_disk():
    x = torch.rand(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4 - 2
    q = neuron(weight_b=[[-1., -1.]], bias_b=[1.])
    torch.testing.assert_close(q(x).squeeze(1), 1 - x.square().sum(1))
    assert torch.equal(q(x).squeeze(1) > 0, x.square().sum(1) < 1)


def test_no_line_classifies_xor():
    """Any conventional neuron sign(w·x + b) gets at most 3 of the 4 XOR points right."""
    x = torch.tensor([[-1., -1.], [-1., 1.], [1., -1.], [1., 1.]])
    y = x[:, 0] * x[:, 1] < 0
    angles = torch.linspace(0, 2 * torch.pi, 721)[:-1]
    w = torch.stack((angles.cos(), angles.sin()), 1)
    best = max(((x @ wi + b > 0) == y).sum().item() for wi in w for b in torch.linspace(-2.5, 2.5, 51))
    assert best == 3
