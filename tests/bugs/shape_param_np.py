# A batch whose sequence length does not match the model's block_size.
# expect: kind=shape-mismatch
# expect: function=embed
# expect: parameter=targets
# expect: expected=Int[ndarray, 'batch seq']
# expect: got=int64[4,32]
# expect: extra.dimension=seq
# expect: extra.size=32
# expect: extra.expected_size=16
# expect: extra.bound_by=idx
# expect: extra.config=block_size
# expect: extra.config_value=16
# expect~: suggestion=block_size
# expect~: details=config.block_size = 16
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float, Int


@dataclass(frozen=True)
class Config:
    block_size: int = 16
    n_embd: int = 8


def embed(config: Config, idx: Int[np.ndarray, "batch seq"], targets: Int[np.ndarray, "batch seq"]) -> Float[np.ndarray, "batch seq embed"]:
    return np.zeros((*idx.shape, config.n_embd))


config = Config()
idx = np.zeros((4, 16), dtype=np.int64)
targets = np.zeros((4, 32), dtype=np.int64)
embed(config, idx, targets)  # <- report
