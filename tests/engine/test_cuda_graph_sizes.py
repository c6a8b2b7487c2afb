"""The batch sizes CUDA graphs are captured for (the capture itself needs a GPU:
test_gpu_engine.py)."""

from engine.cuda_graphs import capture_sizes


def test_capture_sizes_cover_every_batch_up_to_the_maximum():
    assert capture_sizes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert capture_sizes(10) == [1, 2, 4, 8, 16]
    assert capture_sizes(3) == [1, 2, 3]
    assert capture_sizes(1) == [1]
    for max_batch in range(1, 80):
        sizes = capture_sizes(max_batch)
        assert sizes == sorted(set(sizes)) and sizes[-1] >= max_batch
