"""One row scored through LightGBM's single-row fast path.

`Booster.predict` builds a predictor and parses its parameters on every call: for one row of
the benchmark's 200-tree model that is ~44 µs, of which walking the trees is a few. LightGBM's C
API keeps that set-up in a FastConfig (`LGBM_BoosterPredictForMatSingleRowFastInit`, once per
loaded version) and then scores a row in ~7 µs (`LGBM_BoosterPredictForMatSingleRowFast`), with
the same trees, iterations and output transform: the scores are bit-identical
(tests/serving/test_single_row.py). Most predict requests are one entity, so this is their
scoring; a batch still goes to `Booster.predict`, vectorized.

A FastConfig must not be used by two threads at once, and its input and output buffers are
shared: a lock guards them (the event loop and the shadow thread are the callers, each holding
it for a few microseconds). The call keeps the GIL (ctypes.PyDLL): for a few microseconds of
work, handing the GIL over and waiting to get it back from another thread cost the event loop
more.
"""

from __future__ import annotations

import ctypes
import threading
import weakref

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from lightgbm.libpath import _LIB

# LightGBM's library (loaded once by the process; this is a second handle on it) called
# without releasing the GIL.
_HOLDING_GIL = ctypes.PyDLL(_LIB._name)  # noqa: SLF001 - where lightgbm loaded it from

__all__ = ["SingleRowScorer"]

F64 = npt.NDArray[np.float64]

_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL: with the objective's transform, as predict()
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
# As serving/scoring.py calls Booster.predict: one thread (OpenMP's start-up would cost more).
_PARAMETERS = b"num_threads=1"


class SingleRowScorer:
    """`scorer(row)` is `booster.predict(row[None, :], num_threads=1)[0]`, faster.

    >>> import lightgbm as lgb, numpy as np
    >>> X = np.arange(40, dtype=float).reshape(20, 2)
    >>> booster = lgb.train({"verbose": -1, "min_data_in_leaf": 1}, lgb.Dataset(X, X[:, 0]), 3)
    >>> row = np.array([7.0, np.nan])
    >>> bool(SingleRowScorer.of(booster)(row) == booster.predict(row[None, :], num_threads=1)[0])
    True
    """

    def __init__(self, booster: lgb.Booster) -> None:
        self.features = booster.num_feature()
        self._config = ctypes.c_void_p()
        _check(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,  # noqa: SLF001 - the C handle; LightGBM has no public accessor
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(booster.best_iteration),  # as predict(): <= 0 is every iteration
                ctypes.c_int(_FLOAT64),
                ctypes.c_int32(self.features),
                ctypes.c_char_p(_PARAMETERS),
                ctypes.byref(self._config),
            )
        )
        # The config points into the booster: the finalizer keeps the booster until it is freed.
        weakref.finalize(self, _free, self._config, booster)
        # The row goes through a buffer of our own, its address taken once: a pointer made per
        # call (`ndarray.ctypes.data_as`) is a reference cycle, garbage only the collector frees,
        # and its collections were pauses on the request path.
        self._in = np.empty(self.features, dtype=np.float64)
        self._in_pointer = ctypes.c_void_p(self._in.ctypes.data)
        self._out = np.empty(1, dtype=np.float64)
        self._out_pointer = ctypes.cast(self._out.ctypes.data, ctypes.POINTER(ctypes.c_double))
        self._out_length = ctypes.c_int64()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, booster: lgb.Booster) -> SingleRowScorer | None:
        """A scorer, or None for a model with several outputs per row (multiclass)."""
        return cls(booster) if booster.num_model_per_iteration() == 1 else None

    def __call__(self, row: F64) -> float:
        if row.shape != (self.features,):
            raise ValueError(f"a row of {self.features} floats is needed, not {row.shape}")
        with self._lock:
            self._in[:] = row
            _check(
                _HOLDING_GIL.LGBM_BoosterPredictForMatSingleRowFast(
                    self._config,
                    self._in_pointer,
                    ctypes.byref(self._out_length),
                    self._out_pointer,
                )
            )
            return float(self._out[0])


def _free(config: ctypes.c_void_p, _booster: lgb.Booster) -> None:
    _check(_LIB.LGBM_FastConfigFree(config))


def _check(code: int) -> None:
    if code != 0:
        raise lgb.basic.LightGBMError(_LIB.LGBM_GetLastError().decode("utf-8"))
