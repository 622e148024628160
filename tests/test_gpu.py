"""CUDA paths: bf16 training and batched torch sampling on a GPU. Skipped (and reported as
skipped) on machines without CUDA, such as CI."""

import math

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_sampling_and_bf16_training(tiny_model):
    from ssd_local.config import SampleConfig, TrainConfig
    from ssd_local.app.runs import Run
    from ssd_local.app.sampling import sample
    from ssd_local.app.training import train
    from ssd_local.backends.torch import TorchEngine

    eng = TorchEngine(tiny_model)
    assert eng.device == "cuda" and eng.dtype == torch.bfloat16
    eng.close()
    run, summary = sample(str(tiny_model), SampleConfig(limit=8, max_new_tokens=16,
                                                        batch_size=8), "g")
    assert summary.samples == 8
    f = run.samples_path
    import json

    rows = [dict(json.loads(x), completion="```python\nprint(1)\n```", degenerate=None)
            for x in f.read_text().splitlines()]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = train("g", TrainConfig(max_steps=2, effective_batch=4, batch_size=2))
    assert out.steps == 2 and math.isfinite(out.train_loss)
    assert (Run.load("g").path / "merged" / "model.safetensors").exists()
