# The labels were built with another batch size than the inputs; the config is a dict.
# expect: kind=shape-mismatch
# expect: function=accuracy
# expect: parameter=labels
# expect: extra.dimension=batch
# expect: extra.config=batch_size
# expect: extra.config_value=32
# expect: extra.config_source=cfg['batch_size']
# expect~: suggestion=batch_size
import numpy as np
from jaxtyping import Float, Int


def accuracy(cfg: dict, logits: Float[np.ndarray, "batch classes"], labels: Int[np.ndarray, "batch"]) -> float:
    return float((logits.argmax(-1) == labels).mean())


cfg = {"batch_size": 32, "classes": 10}
logits = np.zeros((cfg["batch_size"], cfg["classes"]))
labels = np.zeros(64, dtype=np.int64)
accuracy(cfg, logits, labels)  # <- report
