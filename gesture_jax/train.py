"""Train a gesture denoiser: ``python -m gesture_jax.train --config=CONFIG --workdir=DIR``.

    python -m gesture_jax.train --config=configs/demo.py --workdir=runs/demo \
        [--config.train.num_steps=N --config.train.checkpoint_every=K \
         --config.mesh.shape=data:2,fsdp:2,tensor:2]

An existing ``--workdir`` with checkpoints resumes where it stopped and prints ``resumed at
step N from DIR`` (same data order, same random numbers: the continued loss curve equals an
uninterrupted run's). SIGTERM saves a checkpoint and exits. Damaged checkpoint steps are
skipped (moved to checkpoints_rejected/, see training/verify.py); a NaN/inf loss stops the
run without saving (``--config.train.nonfinite=skip`` skips such steps instead). Errors
caused by your files or config print one line and exit 2; ``--verbose`` adds the traceback. Overrides name keys of the
locked config; a typo such as ``--config.model.dpeth=4`` is an error naming the key and its
closest match.

Multi-process (one process per host/GPU): set ``GESTURE_JAX_COORDINATOR=host:port``,
``GESTURE_JAX_NUM_PROCESSES`` and ``GESTURE_JAX_PROCESS_ID`` (or run under SLURM / on a TPU
pod, where they are discovered); see launch/README.md.
"""
from __future__ import annotations

import difflib
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from gesture_jax import errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Python config file (configs/*.py)",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, config")
_STOP_AFTER = flags.DEFINE_integer("stop_after", None,
                                   "end this invocation after N steps (the run stays resumable)")
flags.mark_flags_as_required(["config", "workdir"])
errors.define_verbose_flag()


def _known_keys(cfg, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        path = f"{prefix}{k}"
        out.append(path)
        if hasattr(v, "items") and not isinstance(v, dict):
            out.extend(_known_keys(v, path + "."))
    return out


def _explain_override_error(argv: list[str], err: Exception) -> str:
    """A clear message for a bad ``--config.X=V`` (config_flags raises a bare AttributeError)."""
    cfg_file = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)
    overrides = [a[len("--config."):].split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    try:
        import importlib.util
        spec = importlib.util.spec_from_file_location("_cfg_for_hint", cfg_file)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
        known = _known_keys(mod.get_config())
    except Exception:  # cannot re-read the file: fall back to config_flags' own message
        return f"error in --config overrides: {str(err).strip(chr(39))}"
    unknown = [k for k in overrides if k not in known]
    if not unknown:
        return f"error in --config overrides: {str(err).strip(chr(39))}"
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = (" Did you mean " + " or ".join(f"--config.{c}" for c in close) + "?") if close else ""
        lines.append(f"error: --config.{key}: the config from {cfg_file} has no key {key!r} "
                     f"(configs are locked so that a typo fails instead of being ignored).{hint}")
    return "\n".join(lines)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:  # unknown key in a locked ConfigDict
        print(_explain_override_error(argv, e), file=sys.stderr)
        sys.exit(2)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # jax logs every backend it fails to find (libtpu, CUDA) at INFO through absl.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    # Multi-process init must precede any use of a device.
    from gesture_jax.parallel import distributed
    distributed.initialize()
    from gesture_jax.training import loop

    logging.getLogger("absl").setLevel(logging.WARNING)
    cfg = _CONFIG.value
    # Errors from the user's files, data or config: one line naming the problem, exit 2
    # (--verbose: with the traceback). Anything else is a bug and keeps its traceback.
    result = errors.run_cli(loop.train, cfg, _WORKDIR.value, stop_after=_STOP_AFTER.value)
    status = "preempted (checkpoint saved)" if result.preempted else "done"
    print(f"{status}: step {result.step} in {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
