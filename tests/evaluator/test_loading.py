from __future__ import annotations

import pytest
import torch

from saelens_tokenlabel import Evaluator, load_local_model, save_local_model
from saelens_tokenlabel.evaluator.loading import load_evaluator_model


def test_save_and_load_local_model_roundtrip(tiny_evaluator, tmp_path):
    model = tiny_evaluator.model
    save_local_model(model, tmp_path / "m")
    back = load_local_model(tmp_path / "m", device="cpu", dtype=torch.float64)
    tokens = torch.tensor([tiny_evaluator.prompt_ids(tiny_evaluator.encode("a cat", "cat"),
                                                     [7])])
    torch.testing.assert_close(back(tokens), model(tokens), rtol=0, atol=0)
    assert back.cfg.positional_embedding_type == "rotary"
    assert back.cfg.n_key_value_heads == model.cfg.n_key_value_heads
    ev = Evaluator(back)
    assert (ev.yes_id, ev.no_id) == (tiny_evaluator.yes_id, tiny_evaluator.no_id)
    # A folder name goes the local way, never to the hub.
    assert isinstance(load_evaluator_model(str(tmp_path / "m"), device="cpu"), type(model))


def test_load_from_wrong_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_local_model"):
        load_local_model(tmp_path)
