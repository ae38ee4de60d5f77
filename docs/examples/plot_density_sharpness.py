"""The README picture: a Hessian density and λ_max against 2/η during training.

Run from the repository root (about a minute on one CPU core)::

    python docs/examples/plot_density_sharpness.py   # writes docs/img/density_and_sharpness.png
"""

import torch
from matplotlib.figure import Figure

import hesslab
import hesslab.plot as hplot
from hesslab.models import mlp
from hesslab.train.monitor import SpectrumMonitor

g = torch.Generator().manual_seed(0)
x = torch.randn(256, 10, generator=g)
y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 0).long()
model = mlp(10, (32, 32), 3, activation="tanh", seed=0)
eta = 1.0
opt = torch.optim.SGD(model.parameters(), lr=eta)  # full batch: gradient descent
monitor = SpectrumMonitor(
    (x, y), "ce", every=10, k=1, quantities=("lambda_max", "trace"), trace_matvecs=60
)
for step in range(301):
    model.eval()
    monitor.step(model, step)
    model.train()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

model.eval()
H = hesslab.HessianOperator(hesslab.Objective(model, "ce", (x, y)))
dens = hesslab.spectral_density(H, 80, generator=torch.Generator().manual_seed(1), deflate=3)

fig = Figure(figsize=(11, 3.8), layout="constrained")
left, right = fig.subplots(1, 2)
hplot.density(dens, left, title="Hessian density after training (SLQ)")
hplot.monitor_series(
    monitor.measurements, "lambda_max", eta=eta, ax=right, title="λ_max during gradient descent"
)
fig.savefig("docs/img/density_and_sharpness.png", dpi=100)
