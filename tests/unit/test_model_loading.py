"""Model loads in two threads at once. transformers' from_pretrained swaps
`PreTrainedModel.tie_weights` for a no-op while it builds a model; two overlapping loads can leave
the no-op in place, and every later model with tied embeddings then loads with a random output
head (it answered garbage in CI). ladder's loaders hold one lock, so they never overlap."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from service.engines.local_model import load_model  # noqa: E402
from tests.support.models import small_llama  # noqa: E402

PAIRS = 12


@pytest.fixture(scope="module")
def tied_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Llama whose output head is its input embedding, as SmolLM2's is."""
    folder = tmp_path_factory.mktemp("tied")
    torch.manual_seed(0)
    model = small_llama(vocab=256, num_hidden_layers=1, tie_word_embeddings=True)
    model.save_pretrained(folder)
    return folder


def is_tied(model: Any) -> bool:
    head = model.get_output_embeddings().weight
    return bool(head.data_ptr() == model.get_input_embeddings().weight.data_ptr())


def test_loads_in_two_threads_at_once_leave_transformers_as_they_found_it(
    tied_model: Path,
) -> None:
    original = transformers.PreTrainedModel.tie_weights
    loaded: list[Any] = []
    errors: list[BaseException] = []

    def load(start: threading.Barrier) -> None:
        start.wait()
        try:
            loaded.append(load_model(tied_model, {}).model)
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    try:
        for _ in range(PAIRS):
            start = threading.Barrier(2)
            threads = [threading.Thread(target=load, args=(start,)) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert not errors
            assert transformers.PreTrainedModel.tie_weights is original
        assert len(loaded) == 2 * PAIRS and all(is_tied(model) for model in loaded)
        assert is_tied(load_model(tied_model, {}).model)
    finally:
        # Were it broken, the rest of this worker's tests must not inherit the no-op.
        transformers.PreTrainedModel.tie_weights = original
