"""Evaluation: gesture metrics on joint positions and the FGD autoencoder.

fgd.py        Fréchet distance (Yoon/GENEA port), GENEA windows, raw-space FGD
fgd_ae.py     the Flax NNX motion autoencoder FGD features come from; training; Orbax files
beat.py       beat consistency (BEAT/EMAGE alignment metric)
kinematic.py  jerk, acceleration, L1 diversity, speed histograms + Hellinger distance
kucherenko.py Kucherenko 2019 protocol: APE, MAE, jerk/acceleration per frame, speed histograms (HMD)
joints.py     the joints (upper body) and frame of reference (root-relative) metrics use
metrics.py    MetricConstants and evaluate_set: the whole suite for one set of clips
baselines.py  ground truth, mismatched ground truth (motion of training recordings), mean pose, random noise
plots.py      speed histograms and BC per file, bar charts per metric, as PNG
compare.py    several runs on the same held-out files, autoencoder and baselines: one table
The command line is gesture_jax/evaluate.py.
"""
