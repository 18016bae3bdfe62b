"""Training-batch plumbing: length-grouped finetuning batches and the data-loader wait figure."""

from __future__ import annotations

import time

import numpy as np
import torch

from lmforge.data.datasets import length_grouped_order


def padded_tokens(order: list[int], lengths: np.ndarray, batch: int) -> int:
    return sum(
        int(lengths[order[i : i + batch]].max()) * len(order[i : i + batch])
        for i in range(0, len(order), batch)
    )


def test_length_grouping_keeps_every_example_once_and_cuts_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=1003)  # a short last batch too
    order = length_grouped_order(lengths, 16, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(1003))
    plain = torch.randperm(1003, generator=torch.Generator().manual_seed(0)).tolist()
    assert padded_tokens(order, lengths, 16) < 0.7 * padded_tokens(plain, lengths, 16)
    # Every full batch the DataLoader cuts is one group's batch; the short one comes last.
    assert len(order) % 16 == 1003 % 16
    # Seeded: the same order for the same generator state, another for another seed.
    assert order == length_grouped_order(lengths, 16, torch.Generator().manual_seed(0))
    assert order != length_grouped_order(lengths, 16, torch.Generator().manual_seed(1))


def test_length_grouped_batches_still_mix_the_data() -> None:
    # Batches are not sorted across the epoch: the first batches are not all the longest texts.
    lengths = np.arange(2000) % 50 + 3
    order = length_grouped_order(lengths, 20, torch.Generator().manual_seed(0), group=5)
    firsts = [int(lengths[order[i]]) for i in range(0, len(order), 20)]
    assert firsts != sorted(firsts, reverse=True) and firsts != sorted(firsts)
    means = [float(lengths[order[i : i + 20]].mean()) for i in range(0, len(order), 20)]
    assert np.std(means) > 5  # batches differ in length from one another...
    spreads = [int(np.ptp(lengths[order[i : i + 20]])) for i in range(0, len(order), 20)]
    assert np.mean(spreads) < 10  # ...while each batch is nearly uniform (plain: ~45)


def test_resumable_sampler_groups_by_length_when_given_lengths() -> None:
    from lmforge.lit.resume import ResumableSampler

    lengths = np.random.default_rng(1).integers(3, 60, size=300)
    sampler = ResumableSampler(300, seed=2, lengths=lengths, batch_size=10)
    order = list(sampler)
    assert sorted(order) == list(range(300))
    assert padded_tokens(order, lengths, 10) < 0.8 * padded_tokens(list(range(300)), lengths, 10)
    # A resume skips what was consumed and yields the rest of the same order.
    resumed = ResumableSampler(300, seed=2, lengths=lengths, batch_size=10)
    resumed.skip(0, 120)
    assert list(resumed) == order[120:]


class SlowData(torch.utils.data.Dataset):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> torch.Tensor:
        time.sleep(self.delay)
        return torch.ones(4)


def wait_fraction(delay: float, compute: float) -> float:
    import lightning as L

    from lmforge.lit.callbacks import LoaderWait

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            time.sleep(compute)
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    wait = LoaderWait(window=5)
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[wait],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(Model(), torch.utils.data.DataLoader(SlowData(delay), batch_size=2))
    assert wait.steps == 19  # every step but the first has a gap before it
    return wait.fraction


def test_loader_wait_tells_a_slow_loader_from_a_slow_model() -> None:
    slow_loader = wait_fraction(delay=0.01, compute=0.002)  # 20 ms loading vs 2 ms compute
    # 200 ms steps: Lightning's own milliseconds between steps stay small even on a busy
    # machine (with 50 ms steps, two training jobs beside the test pushed them to 25 %).
    slow_model = wait_fraction(delay=0.0, compute=0.2)
    assert slow_loader > 0.7, slow_loader
    assert slow_model < 0.2, slow_model
