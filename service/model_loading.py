"""One lock for every model load in the process.

transformers' `from_pretrained` swaps class attributes while it builds a model
(`PreTrainedModel.tie_weights` and `init_weights`, and torch's init functions) and puts the
originals back afterwards. Two loads at once, in two threads, can put back the other load's
no-op: from then on every model with tied embeddings (SmolLM2, Qwen2) loads with a random output
head and answers garbage, in that process, until it restarts. ladder loads models from several
threads (the engine's, the embedder's, training, replay), so each load holds this lock.
"""

from __future__ import annotations

import threading

# Re-entrant: a base model and then its adapters load under one hold.
MODEL_LOAD_LOCK = threading.RLock()
