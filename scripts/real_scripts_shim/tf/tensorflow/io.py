"""tf.io: `gfile` on the local file system (what flax.io calls through it)."""

import glob as _glob
import os as _os
import shutil as _shutil
import types as _types


def _copy(src, dst, overwrite=False):
    if not overwrite and _os.path.exists(dst):
        raise FileExistsError(dst)
    _shutil.copy(src, dst)


def _rename(src, dst, overwrite=False):
    if not overwrite and _os.path.exists(dst):
        raise FileExistsError(dst)
    _os.replace(src, dst)


def _rmtree(path):
    _shutil.rmtree(path)


gfile = _types.SimpleNamespace(
    GFile=open,
    exists=_os.path.exists,
    isdir=_os.path.isdir,
    listdir=lambda path: _os.listdir(path),
    makedirs=lambda path: _os.makedirs(path, exist_ok=True),
    mkdir=_os.mkdir,
    glob=_glob.glob,
    remove=_os.remove,
    rmtree=_rmtree,
    copy=_copy,
    rename=_rename,
    stat=lambda path: _types.SimpleNamespace(length=_os.stat(path).st_size),
)
