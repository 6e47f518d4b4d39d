"""The benchmarks keep working with the trainer they measure: each side of the trainer
benchmark, at a toy size, twice in one folder as `make bench` repeats it (no timing here)."""

from __future__ import annotations

from benchmarks import bench_trainer

TOY = dict(layers=1, hidden=8, batch=2, seq=8, bf16=False, steps=2)


def test_trainer_benchmark_repeats_in_one_folder(tmp_path, corpora_dir):
    text = corpora_dir / "tinyshakespeare" / "input.txt"
    for _ in range(2):
        rates = bench_trainer.trainer(text, tmp_path, "cpu", *TOY.values())
        assert len(rates) == bench_trainer.WINDOWS and all(r > 0 for r in rates)
    base = bench_trainer.plain_loop(65, "cpu", *TOY.values())
    assert len(base) == bench_trainer.WINDOWS and all(r > 0 for r in base)
