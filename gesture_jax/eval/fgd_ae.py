"""The motion autoencoder whose latent space FGD is measured in (Flax NNX), its training and files.

Why an autoencoder of our own: FGD numbers are only comparable when the feature extractor is
fixed per dataset. Following Yoon et al. (2020) and the GENEA challenges, a small
convolutional autoencoder is trained on the training split's motion, cut into windows of
`window` frames every `stride` = window/2 frames; the encoder's latent vector of a window is
its feature. Inputs are root-relative joint positions (`gesture_jax.eval.joints.root_relative`)
standardized per coordinate with the training statistics, so the AE is independent of the
motion feature representation the generator uses.

Encoder: Conv1d(D→h, k3) → LeakyReLU(0.2) → Conv1d(h→2h, k3, stride 2) → LReLU →
Conv1d(2h→2h, k3, stride 2) → LReLU → flatten → Linear(→256) → LReLU → Linear(→latent).
Decoder: Linear(latent→256) → LReLU → Linear(→ window·h) → reshape → Conv1d(h→h, k3) → LReLU →
Conv1d(h→D, k3). Loss: mean squared reconstruction error; Adam.

Files in the autoencoder directory:
  meta.json  window, stride, fps, sizes, joint names, training steps/loss/seed, format version
  stats.npz  mean/std [D] (input standardization), mean_speed [J] (BC normalizer),
             mean_pose [J,3] (the mean-pose baseline), all from the training split
  params/    Orbax StandardCheckpointer of the parameters (a pure dict of arrays)
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
from gesture_jax import storage
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gesture_jax.errors import UserError
from gesture_jax.eval.fgd import make_windows, window_starts
from gesture_jax.storage import Path

FORMAT_VERSION = 1


class FGDAutoencoderError(UserError, RuntimeError):
    """A missing or inconsistent FGD autoencoder directory."""


class MotionAutoencoder(nnx.Module):
    """Conv autoencoder of motion windows [B, window, D] -> latent [B, latent] -> [B, window, D]."""

    def __init__(self, input_dim: int, window: int, hidden: int = 64, latent: int = 32, *, rngs: nnx.Rngs):
        self.input_dim, self.window, self.hidden, self.latent = input_dim, window, hidden, latent
        reduced = math.ceil(math.ceil(window / 2) / 2)  # two stride-2 SAME convolutions
        self.enc1 = nnx.Conv(input_dim, hidden, 3, rngs=rngs)
        self.enc2 = nnx.Conv(hidden, 2 * hidden, 3, strides=2, rngs=rngs)
        self.enc3 = nnx.Conv(2 * hidden, 2 * hidden, 3, strides=2, rngs=rngs)
        self.enc_fc = nnx.Linear(reduced * 2 * hidden, 256, rngs=rngs)
        self.enc_out = nnx.Linear(256, latent, rngs=rngs)
        self.dec_fc = nnx.Linear(latent, 256, rngs=rngs)
        self.dec_expand = nnx.Linear(256, window * hidden, rngs=rngs)
        self.dec1 = nnx.Conv(hidden, hidden, 3, rngs=rngs)
        self.dec_out = nnx.Conv(hidden, input_dim, 3, rngs=rngs)

    def encode(self, x: jax.Array) -> jax.Array:
        """[B, window, D] standardized -> [B, latent]."""
        act = lambda h: nnx.leaky_relu(h, 0.2)
        h = act(self.enc1(x))
        h = act(self.enc2(h))
        h = act(self.enc3(h))
        h = act(self.enc_fc(h.reshape(h.shape[0], -1)))
        return self.enc_out(h)

    def decode(self, z: jax.Array) -> jax.Array:
        """[B, latent] -> [B, window, D]."""
        act = lambda h: nnx.leaky_relu(h, 0.2)
        h = act(self.dec_fc(z))
        h = act(self.dec_expand(h)).reshape(z.shape[0], self.window, self.hidden)
        h = act(self.dec1(h))
        return self.dec_out(h)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x))


@dataclasses.dataclass
class FGDAutoencoder:
    """A trained autoencoder with everything needed to turn position clips into FGD features."""
    model: MotionAutoencoder
    mean: np.ndarray            # [D] input standardization
    std: np.ndarray             # [D]
    mean_speed: np.ndarray      # [J] training mean joint speed (BC normalizer)
    mean_pose: np.ndarray       # [J, 3] training mean root-relative pose
    meta: dict

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def stride(self) -> int:
        return int(self.meta["stride"])

    def windows(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Root-relative position clips [N_i, J, 3] -> standardized windows [W, window, D] float32."""
        w = make_windows(clips, self.window, self.stride)
        if w.shape[0] and w.shape[2:] != tuple(self.mean_pose.shape):
            raise FGDAutoencoderError(
                f"clips have {w.shape[2:]} joints x coords per frame, the FGD autoencoder in "
                f"{self.meta.get('dir', '?')} was trained on {tuple(self.mean_pose.shape)}")
        w = w.reshape(w.shape[0], self.window, -1)
        return ((w - self.mean) / self.std).astype(np.float32)

    def features(self, clips: Sequence[np.ndarray], batch: int = 256) -> np.ndarray:
        """FGD features [W, latent] of all windows of the clips (fixed-size batches: one compile)."""
        x = self.windows(clips)
        graphdef, state = nnx.split(self.model)
        out = []
        for i in range(0, x.shape[0], batch):
            chunk = x[i:i + batch]
            pad = batch - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.float32)])
            out.append(np.asarray(_encode(graphdef, state, jnp.asarray(chunk)))[:batch - pad])
        return np.concatenate(out) if out else np.zeros((0, self.model.latent), np.float32)


@jax.jit
def _encode(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    """Encoder forward as a pure function of (graphdef, state): one compile per shape."""
    return nnx.merge(graphdef, state).encode(x)


@functools.partial(jax.jit, static_argnames=("lr",))
def _train_step(graphdef: nnx.GraphDef, params: nnx.State, opt_state, x: jax.Array, *, lr: float):
    """One Adam step on the reconstruction MSE (module level: repeated trainings reuse the compile)."""
    tx = optax.adam(lr)

    def loss_fn(p):
        return jnp.mean((nnx.merge(graphdef, p)(x) - x) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def input_stats(clips: Sequence[np.ndarray], std_floor: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean/std [J*3] over all frames (running float64 sums: no big copy).

    The std is floored at std_floor x the largest std: constant coordinates exist (a root
    fixed at the origin by root_relative, joints the pipeline does not animate).
    """
    n, s1, s2 = 0, 0.0, 0.0
    for c in clips:
        x = np.asarray(c, np.float64).reshape(c.shape[0], -1)
        n, s1, s2 = n + x.shape[0], s1 + x.sum(0), s2 + (x * x).sum(0)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    std = np.maximum(std, std_floor * max(1.0, float(std.max())))
    return mean.astype(np.float32), std.astype(np.float32)


def train_fgd_autoencoder(clips: Sequence[np.ndarray], *, fps: float, joint_names: Sequence[str],
                          mean_speed: np.ndarray, window: int = 34, stride: int | None = None,
                          hidden: int = 64, latent: int = 32, steps: int = 2000, batch_size: int = 64,
                          lr: float = 1e-3, seed: int = 0, log_every: int = 100,
                          log: Callable[[str], None] | None = print) -> FGDAutoencoder:
    """Train the autoencoder on root-relative training clips [N_i, J, 3] (deterministic given seed).

    The clips are held once, standardized, as one [M, J*3] float32 array; a batch gathers
    `batch_size` window starts drawn uniformly (with replacement) by a numpy Generator seeded
    by `seed` from the GENEA window grid (window frames, stride frames, per clip). Weights come
    from nnx.Rngs(seed) and the step is one jitted function, so a rerun with the same clips and
    seed gives the same weights on the same machine. Memory: one copy of the training motion
    (BEAT's ~30 h at 20 fps x 75 joints: ~2 GB), never a copy per window.
    """
    stride = max(1, window // 2) if stride is None else stride
    if not clips:
        raise FGDAutoencoderError("no training clips for the FGD autoencoder")
    mean, std = input_stats(clips)
    lengths = [int(c.shape[0]) for c in clips]
    frames = np.concatenate([np.asarray(c, np.float32).reshape(c.shape[0], -1) for c in clips])  # [M, D]
    mean_pose = frames.mean(0, dtype=np.float64).reshape(-1, 3)
    frames -= mean
    frames /= std
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    starts = np.concatenate([window_starts(n, window, stride) + o for n, o in zip(lengths, offsets)])
    if starts.shape[0] < 2:
        raise FGDAutoencoderError(f"only {starts.shape[0]} training windows of {window} frames: the "
                                  f"training split is too short for this fgd_window")
    model = MotionAutoencoder(frames.shape[-1], window, hidden, latent, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    opt_state = optax.adam(lr).init(params)
    rng = np.random.default_rng(seed)
    ramp = np.arange(window, dtype=np.int64)
    history: list[tuple[int, float]] = []
    loss = float("nan")
    for step in range(1, steps + 1):
        idx = starts[rng.integers(0, starts.shape[0], size=batch_size)]
        batch = frames[idx[:, None] + ramp[None, :]]  # [B, window, D]
        params, opt_state, loss_j = _train_step(graphdef, params, opt_state, jnp.asarray(batch), lr=lr)
        if step % log_every == 0 or step == steps:
            loss = float(loss_j)
            history.append((step, loss))
            if log:
                log(f"fgd-ae step {step}/{steps} loss {loss:.5f}")
    model = nnx.merge(graphdef, params)
    meta = {
        "format_version": FORMAT_VERSION, "window": window, "stride": stride, "fps": float(fps),
        "input_dim": int(frames.shape[-1]), "hidden": hidden, "latent": latent,
        "joint_names": list(joint_names), "steps": steps, "batch_size": batch_size, "lr": lr,
        "seed": seed, "final_loss": loss, "loss_history": history,
        "train_windows": int(starts.shape[0]), "train_clips": len(clips), "train_frames": int(frames.shape[0]),
        "positions": "root-relative (root x,z subtracted per frame), skeleton units",
    }
    return FGDAutoencoder(model, mean, std, np.asarray(mean_speed, np.float64), mean_pose, meta)


def save_fgd_autoencoder(directory: str | Path, ae: FGDAutoencoder) -> Path:
    """Write meta.json, stats.npz and the Orbax parameter checkpoint (replacing an old one)."""
    import orbax.checkpoint as ocp

    d = storage.path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pure = nnx.to_pure_dict(nnx.state(ae.model, nnx.Param))
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(d / "params", pure, force=True)
    ckptr.wait_until_finished()
    buf = io.BytesIO()
    np.savez(buf, mean=ae.mean, std=ae.std, mean_speed=ae.mean_speed, mean_pose=ae.mean_pose)
    storage.write_atomic(d / "stats.npz", buf.getvalue())
    meta = {k: v for k, v in ae.meta.items() if k != "dir"}
    storage.write_atomic(d / "meta.json", json.dumps(meta, indent=1))
    return d


def load_fgd_autoencoder(directory: str | Path) -> FGDAutoencoder:
    """Read an autoencoder written by `save_fgd_autoencoder`, with a clear error if anything is off."""
    import orbax.checkpoint as ocp

    d = storage.path(directory)
    for name in ("meta.json", "stats.npz", "params"):
        if not (d / name).exists():
            raise FGDAutoencoderError(
                f"{d / name} is missing: train the FGD autoencoder first with "
                f"`python -m gesture_jax.evaluate --train_fgd_ae --config=CONFIG --fgd_ae={d}`")
    meta = json.loads((d / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise FGDAutoencoderError(f"{d}/meta.json has format_version {meta.get('format_version')}, "
                                  f"expected {FORMAT_VERSION}")
    with np.load(io.BytesIO((d / "stats.npz").read_bytes()), allow_pickle=False) as z:
        stats = {k: z[k] for k in ("mean", "std", "mean_speed", "mean_pose")}
    model = MotionAutoencoder(meta["input_dim"], meta["window"], meta["hidden"], meta["latent"],
                              rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    target = nnx.to_pure_dict(state)
    restored = ocp.StandardCheckpointer().restore(d / "params", target)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    meta["dir"] = str(d)
    return FGDAutoencoder(model, stats["mean"], stats["std"], stats["mean_speed"], stats["mean_pose"], meta)
