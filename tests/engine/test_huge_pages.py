"""Moving a model's CPU tensors onto huge-page memory changes where they live, nothing else."""

from __future__ import annotations

import torch

from engine.huge_pages import HUGE_PAGE, huge_page_zeros, move_to_huge_pages


def test_moved_weights_keep_their_values_ties_and_views_in_one_region() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(800, 800), torch.nn.Linear(800, 800))
    model[1].weight = model[0].weight  # tied, as an LM head to its embedding
    model.register_buffer("table", torch.arange(300_000, dtype=torch.int64))
    model.register_buffer("rows", model.table[10:20])  # a view of another buffer
    model.register_buffer("column", torch.randn(7, 3).bfloat16()[:, 1])  # strided
    before = {name: t.clone() for name, t in model.state_dict(keep_vars=True).items()}
    strides = {name: t.stride() for name, t in model.state_dict(keep_vars=True).items()}

    move_to_huge_pages(model)

    after = model.state_dict(keep_vars=True)
    for name, tensor in after.items():
        assert torch.equal(tensor, before[name]), name
        assert tensor.stride() == strides[name], name
    assert isinstance(model[0].weight, torch.nn.Parameter) and model[1].weight is model[0].weight
    storages = {t.untyped_storage().data_ptr() for t in after.values()}
    assert len(storages) == 1  # one region holds them all
    model.table[15] = -1
    assert model.rows[5] == -1  # the view still looks into its buffer
    assert all(t.data_ptr() % 64 == 0 for t in (model[0].weight, model[0].bias, model.table))
    assert model(torch.ones(2, 800)).shape == (2, 800)


def test_small_models_stay_where_they_are() -> None:
    model = torch.nn.Linear(4, 4)
    weight = model.weight.data
    move_to_huge_pages(model)
    assert model.weight.data.data_ptr() == weight.data_ptr()


def test_huge_page_zeros_is_zeros_of_the_shape_and_type() -> None:
    for shape, dtype in (((2, 3, HUGE_PAGE // 4), torch.bfloat16), ((5, 7), torch.float32)):
        zeros = huge_page_zeros(shape, dtype)
        assert zeros.shape == shape and zeros.dtype is dtype
        assert zeros.is_contiguous() and not zeros.any()
        zeros[-1, -1] = 1  # writable
