"""check_real_scripts.py's driver for a flax example whose main.py is an absl app (mnist, vae).

Copied next to the example's train.py as rax_check_main.py and run in place of its main.py, which
needs clu (for a work-unit note) and TensorFlow: like main.py, it parses absl flags, builds the
config from the example's configs/default.py, overrides fields as `--config.FIELD=VALUE` would
(`--set FIELD=VALUE`, the value of the field's type) and calls
`train.train_and_evaluate(config, workdir)`. It was not written by flax's authors; their train.py,
models and config are imported unchanged.
"""

import ast

from absl import app, flags, logging

import train  # the example's, from this directory
from configs import default

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory to store model data.")
flags.DEFINE_multi_string("set", [], "FIELD=VALUE: override a field of configs/default.py's config.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("Too many command-line arguments.")
    config = default.get_config()
    for item in FLAGS.set:
        field, _, value = item.partition("=")
        old = getattr(config, field)
        setattr(config, field, type(old)(ast.literal_eval(value)))
    logging.info("config: %s", dict(sorted(config.items())))
    train.train_and_evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
