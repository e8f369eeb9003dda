import numpy as np
import pytest

from gesture_jax.data import records


def _window(**kw):
    w = dict(motion=np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32),
             audio=np.ones((8, 3), np.float16), file_id="a", start_frame=4, mirrored=True)
    w.update(kw)
    return w


def test_roundtrip_is_exact():
    w = _window()
    d = records.decode_window(records.encode_window(w))
    np.testing.assert_array_equal(d["motion"], w["motion"])
    assert d["audio"].dtype == np.float16 and d["motion"].dtype == np.float32
    assert (d["file_id"], d["start_frame"], d["mirrored"]) == ("a", 4, True)


def test_bad_windows_are_rejected():
    with pytest.raises(records.RecordError, match="frames"):
        records.encode_window(_window(audio=np.ones((7, 3))))
    with pytest.raises(records.RecordError, match="NaN"):
        records.encode_window(_window(motion=np.full((8, 5), np.nan)))
    with pytest.raises(records.RecordError, match="msgpack|schema"):
        records.decode_window(b"\x00garbage")
