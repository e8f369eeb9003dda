"""Shared defaults for every experiment. Not run directly: dataset configs build on it.

Each section is owned by one part of the library:
  data      -> data_prep/, gesture_jax/data/, gesture_jax/motion/ (joint set, fps, windows)
  audio     -> gesture_jax/audio/ (feature extractor the model conditions on)
  model     -> gesture_jax/models/ (denoiser shape)
  diffusion -> gesture_jax/models/diffusion.py
  train     -> gesture_jax/training/
  mesh      -> gesture_jax/parallel/ (device mesh and sharding rules)
  sample    -> gesture_jax/sampling/
  eval      -> gesture_jax/eval/
The returned ConfigDict is locked by each dataset config, so a typo such as
`--config.model.dpeth=4` fails loudly instead of being ignored.
"""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "base"
    c.seed = 0
    # The method plug-in (gesture_jax/methods/): "persona_gestor" (the reference; model/diffusion
    # sections below) or "kucherenko" (configs/kucherenko_*.py add its own section).
    c.method = "persona_gestor"

    # ---- data: source files, motion representation, windows ---------------------------
    c.data = ml_collections.ConfigDict()
    c.data.dataset = "generic"        # one of: beat, zeggs, trinity, demo, generic
    c.data.root = ""                  # folder of source BVH + WAV files
    c.data.out = ""                   # folder of prepared ArrayRecord shards + manifest
    c.data.fps = 20                   # model frame rate (reference: 20)
    c.data.window_s = 20.0            # training window length (reference: 20 s = 400 frames)
    c.data.stride_s = 10.0            # training window stride (reference: 10 s)
    c.data.test_stride_s = 20.0       # held-out windows do not overlap
    # joints / holdout are tuples so the command line can set them: --config.data.holdout="('x*',)"
    c.data.joints = ()                # joint selection (names); empty = every joint
    c.data.root_position_smoothing = 0.0  # pos_rot_deltas: Gaussian sigma (frames) of the ground trajectory (reference: 0)
    c.data.root_rotation_smoothing = 0.0  # pos_rot_deltas: Gaussian sigma (frames) of the heading (reference: 0)
    c.data.constant_eps = 1e-6        # motion channels with training std below this are dropped (reference: 1e-6)
    # motion representation (gesture_jax/motion/representations.py): "expmap" (Persona-Gestor's exp maps
    # + root deltas) or "positions" (joint + End Site positions, Kucherenko 2019's reference; IK back to BVH)
    c.data.representation = "expmap"
    # positions: "fixed" = root translation ignored, the root at its training mean (KA reference); "world" keeps it
    c.data.positions_root = "fixed"
    c.data.position_velocities = True # positions: add per-frame velocities [p, v] per node (KA reference: True)
    c.data.holdout = ()               # file-name patterns (fnmatch) held out as the test split
    c.data.val_fraction = 0.0         # fraction of training files used for validation loss
    c.data.mirror = True              # add mirrored training windows
    c.data.num_workers = 0            # preparation worker processes (0 = all cores)
    c.data.random_crop_s = 0.0        # >0: train on random crops of this length
    c.data.grain_workers = 0          # Grain worker processes (0 = in-process)
    c.data.prefetch = 2               # Grain read-ahead batches
    c.data.shuffle_buffer = 0         # (global shuffle is index-based; kept for API symmetry)
    c.data.records_per_shard = 1024   # windows per ArrayRecord shard (prepare)

    # ---- audio features ------------------------------------------------------------------
    c.audio = ml_collections.ConfigDict()
    c.audio.feature = "mel"           # "wavlm" (Persona-Gestor reference), "mel" (needs no weights) or "mfcc" (Kucherenko 2019)
    c.audio.sample_rate = 16000
    c.audio.wavlm_dir = ""            # converted checkpoint (python -m data_prep.convert_wavlm)
    c.audio.layer = 12                # hidden-state index (reference: 12)
    # feature="wavlm": True keeps WavLM's own 50 Hz frames in the records (999 per 20 s window), which
    # the fuzzy extractor's down-sampler reads unresampled: this reproduces the paper. False resamples
    # them to data.fps (older runs; the model then interpolates them back to model.fuzzy.audio_fps).
    # mel / mfcc are always at data.fps (they have no other rate). The manifest records the rate (audio.rate).
    c.audio.native_rate = True
    c.audio.normalize_waveform = False  # force whole-clip normalization (on anyway for checkpoints trained with it: Large)
    c.audio.n_mels = 80
    c.audio.chunk_s = 30.0            # long files are encoded in overlapping chunks (<= 0: never chunk)
    c.audio.chunk_overlap_s = 5.0     # at most chunk_s / 2; chunks are cross-faded inside the overlap
    c.audio.batch_chunks = 4          # chunks per jitted WavLM call
    # feature="mfcc" (Kucherenko et al. 2019): 26 MFCCs of 20 ms windows, 10 ms hop, averaged to data.fps
    c.audio.mfcc_numcep = 26          # reference: 26
    c.audio.prosody = False           # + [energy, d energy, pitch, d pitch] (praat-parselmouth); reference IVA'19 default: True ("MFCC+Pros")

    # ---- model: the Persona-Gestor denoiser (reference shape in configs/beat.py) ---------
    c.model = ml_collections.ConfigDict()
    c.model.block = "reference"       # "reference" (AdaLN + RelMHSA + conformer conv) or "dit" (adaLN-Zero)
    c.model.depth = 12
    c.model.dim = 1280
    c.model.heads = 16
    c.model.mlp_ratio = 4.0
    c.model.dropout = 0.1
    c.model.attn_mask = "reference"   # "reference" (self and future hidden), "causal", "none"
    c.model.max_len = 400             # relative-position table length
    c.model.time_embed_dim = 2560     # sinusoidal table width
    c.model.conv_kernel = 3           # conformer depthwise kernel
    c.model.motion_in_kernel = 3
    c.model.fuzzy = ml_collections.ConfigDict()
    c.model.fuzzy.style_kernel = 500  # global style conv (reference: 768->768, k=500, dilation 2)
    c.model.fuzzy.style_dilation = 2
    c.model.fuzzy.down_kernel = 201   # down-sampler (reference: 768->1280, k=201, stride 2)
    c.model.fuzzy.down_stride = 2
    c.model.fuzzy.audio_fps = 50.0    # frame rate of the audio features the model reads
    c.model.param_dtype = "float32"
    c.model.null_cond = True          # learned "no audio" embedding for classifier-free guidance (not in the reference)
    # Diffusion-step features: 0 = computed by formula (ours; differs from torch's float32 power in the
    # last unit of some frequencies, harmless when training from scratch); N > 0 = a stored N-row table,
    # set by the reference importer (methods/persona_gestor/import_reference.py) to torch's exact values.
    c.model.step_table_rows = 0

    # ---- diffusion -------------------------------------------------------------------------
    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.num_steps = 1000
    c.diffusion.schedule = "linear_sqrt"  # reference: betas = linspace(sqrt(b0), sqrt(b1))^2; or "cosine"
    c.diffusion.beta_start = 1e-4
    c.diffusion.beta_end = 0.08
    c.diffusion.prediction = "eps"    # "eps", "x0" or "v"

    # ---- training --------------------------------------------------------------------------
    c.train = ml_collections.ConfigDict()
    c.train.stage = ""                # multi-stage methods: the stage this invocation trains ("" = the only one)
    c.train.batch_size = 38
    c.train.num_steps = 100_000
    c.train.lr = 2e-4
    c.train.weight_decay = 0.01
    c.train.warmup_steps = 1000
    c.train.warmup_init_factor = 8e-5  # warm-up starts at lr * this
    c.train.lr_decay = "constant"     # after warm-up: "constant" (reference) or "cosine" to lr * lr_final_factor
    c.train.lr_final_factor = 0.0
    c.train.clip_norm = 0.5
    c.train.adam_eps = 1e-8           # AdamW epsilon (reference: PyTorch default 1e-8)
    c.train.ema_decay = 0.0           # 0 = no EMA (reference)
    c.train.compute_dtype = "float32" # or "bfloat16" (fp32 master weights either way)
    c.train.grad_accum = 1
    c.train.cond_dropout = 0.0        # >0 enables classifier-free guidance at sampling
    c.train.loss_vel_weight = 0.0     # >0 adds MSE of frame differences of the x0 estimate (MDM); 0 = reference
    c.train.loss_weighting = "none"   # "none" (reference) or "min_snr" (Min-SNR-gamma weights per diffusion step)
    c.train.min_snr_gamma = 5.0
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 3
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.eval_batches = 4
    c.train.async_checkpoint = True   # write checkpoints in the background
    # A step whose loss or gradient norm is NaN/inf is never applied (the weights stay those of
    # the step before) and never saved. "stop" ends the run there, naming the step and the last
    # good checkpoint; "skip" goes on with the next batch, counting skipped steps in
    # metrics.jsonl (nonfinite_steps), and stops after max_nonfinite_skips in a row.
    c.train.nonfinite = "stop"
    c.train.max_nonfinite_skips = 20

    # ---- device mesh and sharding ------------------------------------------------------
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = "data:-1,fsdp:1,tensor:1"  # -1 takes the remaining devices
    # (regex on the parameter path, tactic); first match wins. Tactics: "replicate", "fsdp",
    # "fsdp+tensor" (last dim over tensor, largest other over fsdp), or an explicit spec per
    # dimension like "-,fsdp,tensor". Axes that do not divide a dimension are dropped.
    c.mesh.rules = [
        (r"(kernel|embedding|weight)$", "fsdp+tensor"),  # dense and conv weights
        (r".*", "replicate"),                             # biases, norms, scalars
    ]
    c.mesh.min_shard_size = 2 ** 14   # smaller arrays are replicated
    c.mesh.gather_fsdp = True         # gather fsdp-split weights for compute (ZeRO-3); see training/step.py

    # ---- sampling --------------------------------------------------------------------------
    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = "ddpm"         # "ddpm" (reference), "ddim", "dpm-solver++"
    c.sample.steps = 1000
    c.sample.eta = 1.0                # ddim / dpm-solver++ noise: 1 = stochastic (matches DDPM statistics), 0 = ODE
    c.sample.guidance = 1.0
    c.sample.overlap_s = 2.0          # long audio: overlap between consecutive windows
    c.sample.snap_s = 0.5             # move each window border up to this far to where the motion is slowest (0 = off)
    c.sample.snap_steps = 5           # ... as found by a pre-pass of this many DPM-Solver++ steps (same seed)
    c.sample.smooth_sigma = 0.0       # Gaussian smoothing (std, frames at data.fps) of the sampled motion (0 = off, as the reference)
    c.sample.batch_windows = 8
    c.sample.clip_x0 = 20.0           # bound on |x0| estimates (standardized units) in every sampler; 0 = off

    # ---- few-step student (diffusion methods; gesture_jax/training/distill.py) ---------------
    #   python -m gesture_jax.train --config=CONFIG --workdir=RUN --config.train.stage=distill
    #   python -m gesture_jax.generate --workdir=RUN --sampler=student --steps=1|2 ...
    # Not in the paper (the reference samples with DDPM-1000): ours. The student is the
    # teacher's network, started from its EMA weights, trained to reach in one jump the clean
    # motion the teacher's ODE reaches from the same noisy input.
    c.distill = ml_collections.ConfigDict()
    c.distill.teacher_workdir = ""    # "" = the teacher trained in the same --workdir
    c.distill.teacher_sampler = "dpm-solver++"  # the teacher's deterministic ODE solver (eta = 0) for the targets
    c.distill.teacher_steps = 10      # its steps from each training time to clean motion
    c.distill.guidance = 0.0          # classifier-free guidance baked into the targets (0 = sample.guidance)
    c.distill.levels = 16             # training times: T-1 and levels-1 times evenly in [t_min_frac (T-1), T-1)
    c.distill.t_min_frac = 0.3
    c.distill.p_top = 0.5             # share of the batch trained at T-1 (the one-step map)
    # + this x the MSE of the error's frame-to-frame differences: on the demo (1500 steps, 3 seeds)
    # 2.0 brought the students' jerk from 1.16x (2 steps) / 1.84x (1 step) the ground truth's to
    # 1.05x / 1.29x; FGD and BC unchanged
    c.distill.vel_weight = 2.0
    c.distill.prediction = "x0"       # what the student outputs (x0 is well defined at T-1 for any schedule)
    c.distill.steps = 2               # default --steps of --sampler=student
    # a 2-step student's second step at t = mid_frac (T-1) (>= t_min_frac); on the demo 0.3 / 0.5 / 0.7
    # gave FGD 0.370 / 0.373 / 0.387, BC 0.694 / 0.692 / 0.681, jerk 398 / 431 / 466 (3 seeds)
    c.distill.mid_frac = 0.3
    # The distill stage's training settings, over `train` (--config.stages.distill.KEY=...).
    c.stages = ml_collections.ConfigDict()
    # EMA 0.99: with 0.999 a 2000-step student still holds 13% of the teacher's weights (0.999^2000)
    # and scored FGD 0.37 / BC 0.69 (2 steps) against 0.33 / 0.70 from its raw weights.
    c.stages.distill = ml_collections.ConfigDict(dict(num_steps=4000, lr=3e-4, warmup_steps=100, ema_decay=0.99,
                                                      cond_dropout=0.0, checkpoint_every=500))

    # ---- evaluation ------------------------------------------------------------------------
    c.eval = ml_collections.ConfigDict()
    # (python -m gesture_jax.evaluate; every value below is written into metrics.json)
    c.eval.split = "test"             # held-out split evaluated
    c.eval.root_relative = True       # subtract the root's x,z per frame before every metric
    c.eval.heading_free = True        # also remove the root's heading (yaw) per frame: generated headings drift
    c.eval.fgd_window = 34            # GENEA protocol: windows of n frames, stride n/2
    c.eval.fgd_stride = 0             # 0 = fgd_window // 2
    c.eval.fgd_eps = 1e-6             # covariance-diagonal offset when sqrtm is not finite (Yoon/GENEA)
    c.eval.fgd_method = "sqrtm"       # feature-space FGD: "sqrtm" (reference), "svd" (exact, low-rank), "auto"
    c.eval.fgd_raw_method = "auto"    # raw-space FGD: sqrtm while full rank and <= fgd_auto_max_dim, else svd
    c.eval.fgd_auto_max_dim = 1024
    c.eval.fgd_ae_dir = ""            # trained FGD autoencoder; "" = {data.out}/fgd_ae
    c.eval.fgd_ae_hidden = 64
    c.eval.fgd_ae_latent = 32         # feature size (Yoon et al.: 32)
    c.eval.fgd_ae_steps = 3000
    c.eval.fgd_ae_batch = 64
    c.eval.fgd_ae_lr = 1e-3
    c.eval.bc_sigma = 0.3             # seconds
    c.eval.bc_order = 7               # argrelextrema order (frames)
    c.eval.bc_threshold = 0.3         # motion beat: normalized speed above this
    c.eval.bc_mask_frames = 60        # frames masked at each end of a file
    c.eval.bc_hop = 512               # librosa onset hop at 16 kHz
    c.eval.bc_joints = ()             # joint names for BC (a tuple: settable from the command line); empty = subtree of the first *Spine* joint minus fingers
    c.eval.hist_joints = "upper"      # speed histograms over the BC joints ("upper") or "all"
    c.eval.hist_bins = 50             # speed histograms (Hellinger distance)
    c.eval.hist_max_speed = 0.0       # 0 = the hist_quantile of the ground-truth speeds
    c.eval.hist_quantile = 0.99
    # Kucherenko et al. 2019 protocol (ka_* metrics: APE, MAE, jerk/acceleration per frame, HMD)
    c.eval.ka_hist_bin_width = 0.05   # speed-histogram bins in units/frame (cm/frame) ...
    c.eval.ka_hist_max_speed = 1.0    # ... from 0 to this; faster frames are dropped, not clipped

    return c


def finalize(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Lock the config so unknown keys (typos) raise instead of silently doing nothing."""
    c.lock()
    return c
