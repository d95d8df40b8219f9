from __future__ import annotations

import torch

from autokd.train.threads import SMALL_INPUT_PIXELS, default_cpu_threads, set_cpu_threads


def test_small_inputs_train_on_one_thread_and_images_from_32x32_on_all_cores():
    assert SMALL_INPUT_PIXELS == 1024
    assert default_cpu_threads((1, 8, 8), cores=16) == 1  # digits
    assert default_cpu_threads((3, 31, 32), cores=16) == 1  # 992 pixels
    assert default_cpu_threads((3, 32, 32), cores=16) == 16  # CIFAR
    assert default_cpu_threads((3, 224, 224), cores=2) == 2
    assert default_cpu_threads((40,), cores=8) == 1  # token sequences


def test_the_users_thread_count_wins(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert set_cpu_threads(torch.device("cpu"), (1, 8, 8)) is None and torch.get_num_threads() == before
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_cpu_threads(torch.device("cuda"), (1, 8, 8)) is None and torch.get_num_threads() == before
        assert set_cpu_threads(torch.device("cpu"), (1, 8, 8)) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
