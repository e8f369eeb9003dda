"""The Kucherenko et al. 2019 method settings shared by configs/kucherenko_*.py (not run directly).

Each value is the reference's (spec ../shared/methods/kucherenko.md) unless it says "ours".
Training runs in two invocations, one per stage, in the same workdir:

    python -m gesture_jax.train --config=configs/kucherenko_X.py --workdir=runs/ka --config.train.stage=autoencoder
    python -m gesture_jax.train --config=configs/kucherenko_X.py --workdir=runs/ka --config.train.stage=speech

A stage's optimizer settings live in `stages.<stage>` and override `train` for that stage
(change them there: e.g. --config.stages.speech.num_steps=2000), together with the batch the
loss draws from the windows read (frames_per_step, contexts_per_step); `kucherenko` defines
the model and may not change between the stages of one workdir.
"""
import ml_collections


def apply(c: ml_collections.ConfigDict, *, ae_steps: int, speech_steps: int, ae_windows: int,
          speech_windows: int) -> ml_collections.ConfigDict:
    """Turn a base config into a KA config. *_windows: training windows read per step (the
    loss then draws its batch of frames / contexts from them); *_steps: optimizer steps."""
    c.method = "kucherenko"
    c.data.representation = "positions"   # 3-D joint positions (+ velocities) from forward kinematics
    c.data.positions_root = "fixed"       # reference: hips fixed, root rotation kept
    c.data.position_velocities = True     # reference: [p, v] per node, v = frame difference
    c.data.mirror = False                 # reference: no mirroring (it doubled the data with noisy audio instead)
    c.audio.feature = "mfcc"              # reference default "MFCC" (IVA-era: "MFCC+Pros": audio.prosody=True)
    c.audio.native_rate = False           # its +-30-frame contexts are motion frames: audio at data.fps, whatever the feature
    c.sample.smooth_sigma = 0.0           # reference: no smoothing in the paper's experiments

    c.kucherenko = ml_collections.ConfigDict()
    k = c.kucherenko
    k.use_autoencoder = True              # False: the paper's baseline (SpeechE regresses raw frames in cm)
    k.code_dim = 0                        # 0 = 325/384 of the frame size (reference: 325 for 384)
    k.keep_prob = 0.9                     # AE dropout keep-probability on the input of each layer
    k.noise_fraction = 0.05               # AE input noise std = this x the global std of normalized frames
    k.weight_decay = 0.5                  # x tf.nn.l2_loss of each AE weight matrix, inside the loss
    k.context = 30                        # frames of speech on each side of a motion frame (61 in all)
    k.width = 256                         # SpeechE dense / GRU width
    k.dropout = 0.1
    k.recurrent_activation = "sigmoid"    # Keras 2.3.1 GRU default; the IVA-era Keras had "hard_sigmoid"

    # Per-stage optimizer: Adam (AdamW with weight_decay 0), constant lr, no clipping
    # (the AE's clip at global norm 1e12 never acts).
    common = dict(weight_decay=0.0, clip_norm=0.0, warmup_steps=0, lr_decay="constant", ema_decay=0.0,
                  cond_dropout=0.0)
    c.stages = ml_collections.ConfigDict()
    c.stages.autoencoder = ml_collections.ConfigDict(dict(
        common, lr=1e-4, adam_eps=1e-8, num_steps=ae_steps, batch_size=ae_windows,   # TF Adam defaults
        frames_per_step=128))          # the AE's batch: frames drawn from the windows read

    c.stages.speech = ml_collections.ConfigDict(dict(
        common, lr=1e-3, adam_eps=1e-7, num_steps=speech_steps, batch_size=speech_windows,  # Keras 2.3 Adam
        contexts_per_step=2056))       # SpeechE's batch, "2056 (sic)": contexts drawn from the windows read

    return c
