"""A 2-rank training job whose rank 1 fails at its third step, as the first argument says:
``kill`` (SIGKILL, a crash), ``raise`` (an exception escapes), ``stuck`` (it stops answering).
tests/fastlayers/test_distributed_mpi.py checks that each ends the whole job, with a message."""
import os
import signal
import sys
import time

import numpy as np

import fastlayers as fl
import fastlayers.distributed as dist

mode = sys.argv[1]
dist.init(timeout=float(sys.argv[2]) if len(sys.argv) > 2 else 300)
fl.manual_seed(0)
model = dist.DistributedDataParallel(fl.Sequential(fl.Linear(8, 16), fl.BatchNorm1d(16),
                                                   fl.ReLU(), fl.Linear(16, 3)))
model = fl.SyncBatchNorm.convert_sync_batchnorm(model)
opt = fl.SGD(model.parameters(), lr=0.1)
loss_fn = fl.CrossEntropyLoss()
rng = np.random.default_rng(dist.get_rank())
for step in range(1000):
    if step == 3 and dist.get_rank() == 1:
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif mode == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        elif mode == "stuck":
            time.sleep(600)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    loss_fn(model(x), rng.integers(0, 3, 4))
    opt.zero_grad()
    model.backward(loss_fn.backward())
    opt.step()
print("unreachable: the job should have ended", flush=True)
