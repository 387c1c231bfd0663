"""bench.gpu_check without a GPU: it says so and exits 2 (its checks need a lent GPU)."""

from __future__ import annotations

import torch

from bench import gpu_check


def test_the_gpu_check_says_when_there_is_no_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().out
