"""tf.errors."""


class NotFoundError(FileNotFoundError):
    pass
