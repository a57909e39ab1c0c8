"""FCOS losses under DDP: positives are counted over all ranks, so 2 gloo processes with half the batch each give the
loss and the gradients of one process with the whole batch (torchvision's FCOS divides by each rank's own count)."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp
from helpers.gloo import free_port
from helpers.fcos_ddp import loss_and_grads, make_batch, make_head, worker

from vlt_training.modeling.det_head._distributed import all_reduce_num_positives


def test_without_a_process_group_the_count_is_local():
    assert float(all_reduce_num_positives(7)) == 7.0
    assert float(all_reduce_num_positives(torch.tensor(0))) == 1.0  # never divide by zero positives


def test_two_gloo_processes_match_one_process_with_the_global_batch(tmp_path):
    features, targets = make_batch()
    head = make_head()
    single_losses, single_grads = loss_and_grads(head, features, targets)
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    for name, value in single_losses.items():
        torch.testing.assert_close(ddp["losses"][name], value, rtol=1e-5, atol=1e-6)
    for name, grad in single_grads.items():
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=1e-6)


def test_per_rank_normalisation_would_differ():
    """The check above can fail: normalising each half by its own positives gives another loss."""
    features, targets = make_batch()
    head = make_head()
    whole = head(features, targets)
    halves = [head([f[s] for f in features], targets[s]) for s in (slice(0, 2), slice(2, 4))]
    # off by far more (> 1e-3 relative) than the 1e-5 the DDP comparison allows
    assert all(not torch.allclose((halves[0][k] + halves[1][k]) / 2, whole[k], rtol=1e-3) for k in whole)
