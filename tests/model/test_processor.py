"""FastVLAProcessor: images, tokenisation, normalisation, save/load, no mutation of the caller's batch."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from fastvla.model import FastVLAProcessor
from fastvla.model.tokenizer import build_tiny_tokenizer, tiny_vocab_size

STATS = {
    "observation.state": {"mean": [1.0, 2.0], "std": [2.0, 0.0]},  # second dim constant in the data
    "action": {"min": [-2.0, 0.0, 5.0], "max": [2.0, 1.0, 5.0]},  # third dim constant
}


def make_proc(**kw) -> FastVLAProcessor:
    return FastVLAProcessor(build_tiny_tokenizer(), ["front", "wrist"], 32, max_instruction_tokens=8, **kw)


def batch(b: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "observation.images.front": torch.randint(0, 256, (b, 3, 32, 32), generator=g).to(torch.uint8),
        "observation.images.wrist": torch.randint(0, 256, (b, 3, 32, 32), generator=g).to(torch.uint8),
        "observation.state": torch.tensor([[3.0, 2.0]] * b),
        "task": ["pick up the red cube"] * b,
        "action": torch.tensor([[[2.0, 0.5, 5.0]] * 4] * b),
    }


def test_uint8_and_float_images_agree_and_normalise() -> None:
    proc = make_proc()
    data = batch()
    as_float = {**data, **{k: v.float() / 255 for k, v in data.items() if k.startswith("observation.images")}}
    a, b = proc(data)["pixel_values"], proc(as_float)["pixel_values"]
    assert a.shape == (2, 2, 3, 32, 32)
    torch.testing.assert_close(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0  # mean/std 0.5 maps [0, 1] to [-1, 1]
    # channels-last numpy input (as Gymnasium gives) is accepted as well
    hwc = {**data, "observation.images.front": data["observation.images.front"].permute(0, 2, 3, 1).numpy()}
    torch.testing.assert_close(proc(hwc)["pixel_values"], a)


def test_resize_or_raise() -> None:
    data = {**batch(), "observation.images.wrist": torch.zeros(2, 3, 48, 40, dtype=torch.uint8)}
    assert make_proc()(data)["pixel_values"].shape == (2, 2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(48, 40\) but the model expects \(32, 32\)"):
        make_proc(resize_images=False)(data)
    with pytest.raises(KeyError, match="camera 'wrist' missing"):
        make_proc()({k: v for k, v in batch().items() if "wrist" not in k})


def test_normalisation_round_trip_and_constant_features() -> None:
    proc = make_proc()
    proc.set_stats(STATS)
    out = proc(batch())
    torch.testing.assert_close(out["state"][0], torch.tensor([1.0, 0.0]))  # constant dim -> 0, not 1e8
    torch.testing.assert_close(out["actions"][0, 0], torch.tensor([1.0, 0.0, 0.0]))
    back = proc.unnormalize_actions(out["actions"])
    torch.testing.assert_close(back, batch()["action"])
    as_numpy = proc.unnormalize_actions(out["actions"].numpy())
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    np.testing.assert_allclose(as_numpy, batch()["action"].numpy(), rtol=1e-6)


def test_single_sample_and_tokenisation() -> None:
    proc = make_proc()
    single = {k: v[0] for k, v in batch().items()}
    out = proc(single)
    assert out["pixel_values"].shape == (1, 2, 3, 32, 32) and out["state"].shape == (1, 2)
    assert out["actions"].shape == (1, 4, 3)
    tok = proc.tokenize(["pick up the red cube", "a very long instruction " * 10])
    assert tok["input_ids"].shape == (2, 8)  # truncated to max_instruction_tokens
    assert tok["attention_mask"][0].tolist() == [1] * 6 + [0, 0]
    assert int(tok["input_ids"].max()) < tiny_vocab_size()


def test_never_mutates_batch() -> None:
    proc = make_proc()
    proc.set_stats(STATS)
    data = batch()
    before = copy.deepcopy(data)
    proc(data)
    assert data.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(data[key], value), key


def test_save_load(tmp_path) -> None:
    proc = make_proc(prompt_template="What should the robot do to {task}?")
    proc.set_stats(STATS)
    proc.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "dataset_stats.json").read_text())
    assert saved["modes"] == {"observation.state": "mean_std", "action": "min_max"}
    loaded = FastVLAProcessor.from_pretrained(tmp_path)
    a, b = proc(batch()), loaded(batch())
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    with pytest.raises(FileNotFoundError, match=r"processor_config\.json"):
        FastVLAProcessor.from_pretrained(tmp_path / "nowhere")


def test_files_saved_before_the_camera_rename_load(tmp_path) -> None:
    """``camera_names`` (the former name of ``cameras``) in config.json and processor_config.json."""
    from fastvla.model import FastVLAConfig
    from fastvla.model.presets import preset_config

    preset_config("tiny", cameras=["top", "wrist"]).save_pretrained(tmp_path)
    make_proc().save_pretrained(tmp_path)
    for name in ("config.json", "processor_config.json"):
        saved = json.loads((tmp_path / name).read_text())
        assert "camera_names" not in saved
        saved["camera_names"] = saved.pop("cameras")
        (tmp_path / name).write_text(json.dumps(saved))
    config = FastVLAConfig.from_pretrained(tmp_path)
    assert config.cameras == config.camera_names == ["top", "wrist"]
    assert "camera_names" not in config.to_dict()
    assert FastVLAProcessor.from_pretrained(tmp_path).cameras == make_proc().cameras
