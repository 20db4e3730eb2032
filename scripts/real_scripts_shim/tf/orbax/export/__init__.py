"""check_real_scripts.py's stand-in for orbax.export (a TF SavedModel export, which needs
TensorFlow): `ExportManager.save` runs the exported function once per serving config on zeros of
its input signature (so the example's predict function still runs) and writes only a marker file.
`orbax` stays a namespace package: orbax.checkpoint is the real one."""

import os as _os

import numpy as _np


class ServingConfig:
    def __init__(self, signature_key, input_signature=None, **kwargs):
        self.signature_key = signature_key
        self.input_signature = list(input_signature or [])


class JaxModule:
    def __init__(self, params, apply_fn, **kwargs):
        self.params = params
        self.apply_fn = apply_fn


class ExportManager:
    def __init__(self, module, serving_configs, **kwargs):
        self.module = module
        self.serving_configs = list(serving_configs)

    def save(self, model_path, **kwargs):
        for config in self.serving_configs:
            inputs = [_np.zeros(spec.shape, spec.dtype) for spec in config.input_signature]
            _np.asarray(self.module.apply_fn(self.module.params, *inputs))
        _os.makedirs(model_path, exist_ok=True)
        with open(_os.path.join(model_path, "RAXCHECK_STAND_IN_EXPORT"), "w") as f:
            f.write("written by check_real_scripts.py's stand-in for orbax.export\n")
