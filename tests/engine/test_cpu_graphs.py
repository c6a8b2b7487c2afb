"""The recorded CPU decode step (engine/cpu_graphs.py): replaying it computes what the eager
step computes, bit for bit (tokens and logprobs), at every batch size it serves and for every
family; a step that holds a torch op is refused and decodes eagerly."""

from __future__ import annotations

import pytest
import torch

from compiled_kernels import native
from configs.settings import Settings
from engine.cpu_graphs import CpuGraph
from engine.llm_engine import LLMEngine
from engine.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(native.load() is None, reason="no C compiler")


def _generate(engine: LLMEngine, num_seqs: int, max_tokens: int = 10) -> list[list]:
    """Greedy outputs (tokens and top-2 logprobs) of num_seqs prompts of different lengths,
    run together."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0, logprobs=2, ignore_eos=True)
    seqs = [
        engine.add_request(f"{num_seqs}-{i}", [100 + 7 * i + j for j in range(5 + 3 * i)], params)
        for i in range(num_seqs)
    ]
    outputs: dict[int, list] = {seq.seq_id: [] for seq in seqs}
    while engine.has_work:
        for seq, out in engine.step():
            outputs[seq.seq_id].append((out.new_token_ids, out.logprobs))
    return list(outputs.values())


def _engines(model_dir, **settings) -> tuple[LLMEngine, LLMEngine]:
    base = dict(dtype="float32", max_num_seqs=4, max_model_len=128, kv_cache_memory_gb=0.02)
    base.update(settings)
    eager = LLMEngine(Settings(enforce_eager=True, **base), model_dir)
    return eager, LLMEngine(Settings(**base), model_dir)


@pytest.mark.parametrize("quantization", ["none", "int4"])
def test_the_embedded_model_replays_its_decode_step_bit_for_bit(smollm2_dir, quantization):
    eager, graphs = _engines(smollm2_dir, quantization=quantization)
    assert eager.runner.cpu_graph is None
    graph = graphs.runner.cpu_graph
    assert graph is not None and graph.rows == 4
    for num_seqs in (1, 3, 4):  # fewer rows than recorded, and all of them
        assert _generate(graphs, num_seqs) == _generate(eager, num_seqs)
    assert graph.replays > 0
    # Nothing leaks: every KV block is back.
    assert graphs.scheduler.block_manager.num_free_blocks == graphs.runner.num_blocks


def test_larger_batches_than_recorded_decode_eagerly(smollm2_dir):
    eager, graphs = _engines(smollm2_dir, max_num_seqs=8)
    graphs.runner.cpu_graph = CpuGraph(
        graphs.runner.model.decoder_layers,
        lambda positions: graphs.runner.model.layer_ropes(positions, torch.float32),
        graphs.runner.kv_caches,
        rows=2,
        hidden_size=graphs.runner.config.hidden_size,
        dtype=torch.float32,
        max_blocks_per_seq=8,
        pad_block=graphs.runner.num_blocks,
        block_size=graphs.runner.block_size,
    )
    assert _generate(graphs, 3) == _generate(eager, 3)
    assert graphs.runner.cpu_graph.replays == 0


def test_every_family_decodes_the_same_recorded_or_not(tiny_model_dir):
    model_dir, _ = tiny_model_dir
    eager, graphs = _engines(model_dir, max_model_len=256)
    for num_seqs in (1, 3):
        assert _generate(graphs, num_seqs) == _generate(eager, num_seqs)


def test_a_step_with_a_torch_op_is_refused():
    """A replay runs kernel calls only: a step that computes anything else in torch (here a
    multiplication between two kernels) must not be recorded."""
    weight = torch.ones(8)

    def layers(hidden, ropes):
        from compiled_kernels.norm import rms_norm

        return rms_norm(rms_norm(hidden, weight, 1e-6) * 2, weight, 1e-6)

    graph = CpuGraph(
        layers,
        lambda positions: [],
        [],
        rows=2,
        hidden_size=8,
        dtype=torch.float32,
        max_blocks_per_seq=1,
        pad_block=0,
        block_size=16,
    )
    assert len(graph.calls) == 2
    assert graph.problems == ["aten.mul.Tensor"]


def test_a_replay_runs_its_calls_in_order_and_names_one_that_fails():
    """The whole list runs as one C call; a kernel's nonzero status stops it, and the error says
    which kernel it was."""
    gate_up, out = torch.randn(2, 16), torch.zeros(2, 8)
    silu = native.KernelCall("silu_and_mul", (gate_up.data_ptr(), out.data_ptr()), (8, 0, 1))
    # Decode attention refuses a head wider than it supports before it reads anything.
    after = (9, 3, 1 << 20, 16, 1, 1, 0, 1.0, -1, 0.0, 0, 0, 1)
    attention = native.KernelCall("paged_decode_attention", (None,) * 6, after)
    replay = native.Replay(native.load(), [silu, attention])
    with pytest.raises(RuntimeError, match="paged_decode_attention failed in a replayed step"):
        replay(1)  # one row
    gate, up = gate_up[0].split(8)
    torch.testing.assert_close(out[0], torch.nn.functional.silu(gate) * up)
    assert torch.equal(out[1], torch.zeros(8))  # the second row was not asked for
