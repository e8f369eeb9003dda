"""Readers of other frameworks' checkpoint files: tensors only, never unpickling, and no need
for the framework itself. Methods' converters (e.g. gesture_jax/methods/kucherenko/convert.py)
use them to import authors' weights. sniff.py (file kinds; pickles, PyTorch and TorchScript
archives refused), keras_hdf5.py (Keras 2 .hdf5), tf_checkpoint.py (TF1 tensor bundles).
Where the format itself is a pickle, safe_pickle.py is the one restricted unpickler (it rebuilds
only arrays and plain values, never imports or calls what the pickle names, and records every
other class as an inert Opaque), used by torch_zip.py (torch.save zip archives and Lightning .ckpt
files, read without torch) and for scikit-learn / PyMO scaler and pipeline files."""
from gesture_jax.errors import UserError


class ForeignCheckpointError(UserError, ValueError):
    """A file that cannot be read as the checkpoint it should be (the message names the file)."""
