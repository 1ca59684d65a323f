"""The optimiser keeps torch._dynamo out of a stage, and trains to the same bits as with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A few one-cycle Adam steps (weight decay, a resume through state dicts) on
# a small net; prints whether torch._dynamo got imported and a digest of the weights.
SCRIPT = """
import hashlib, sys
if sys.argv[1] == "dynamo":
    import torch._dynamo  # what torch does itself without our optimiser
import torch
from dogbreeds.params import OneCycleParams
from dogbreeds.training.optim import make_optimizer, one_cycle

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
optimizer, peaks = make_optimizer(model, 0.01, 1e-4, 1.0)
scheduler = one_cycle(optimizer, peaks, 2, 3, OneCycleParams(0.3, 25.0, 1e4))
for step in range(6):
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    scheduler.step()
    if step == 2:  # what resume does between epochs
        optimizer.load_state_dict(optimizer.state_dict())
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()))
print("torch._dynamo" in sys.modules, digest.hexdigest())
"""


def train(mode: str) -> tuple[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, text=True, check=True
    )
    dynamo, digest = out.stdout.split()
    return dynamo, digest


def test_training_steps_leave_dynamo_unimported_and_match_it_bit_for_bit() -> None:
    without, with_dynamo = train("plain"), train("dynamo")
    assert without[0] == "False"  # make_optimizer, steps, state dicts: no torch._dynamo
    assert with_dynamo[0] == "True"
    assert without[1] == with_dynamo[1]  # the same weights, bit for bit
