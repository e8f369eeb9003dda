"""Multi-device checks run in a subprocess (the device count is fixed when jax starts).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/parallel_checks.py sharded_equality SPEC[@ACCUM]...
    GESTURE_JAX_COORDINATOR=127.0.0.1:PORT ... python tests/parallel_checks.py lockstep OUT.npz
    GESTURE_JAX_COORDINATOR=127.0.0.1:PORT ... python tests/parallel_checks.py train_run DATA WORKDIR STOP_AFTER

Each command prints one JSON line on stdout (the last line) for the calling test.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def _train(cfg, spec: str, batches, devices=None, steps_from_state=None):
    """Run len(batches) steps on a fresh state; returns (losses, params as numpy, grad norms)."""
    import jax
    import numpy as np
    import training_fixtures as tf
    from gesture_jax.parallel import mesh as mesh_lib, sharding as shd
    from gesture_jax.training import state as state_lib, step as step_lib

    mesh = mesh_lib.make_mesh(spec, devices)
    rules = shd.rules_from_config(cfg.mesh)
    state, shardings, parts, tx, schedule = state_lib.create_train_state(
        tf.tiny_model_fn(cfg), cfg.train, int(cfg.seed), mesh, rules, int(cfg.mesh.min_shard_size))
    loss_fn = step_lib.diffusion_loss_fn(
        cfg.diffusion, cfg.train, parts, mesh,
        step_lib.compute_shardings(shardings.params, bool(cfg.mesh.gather_fsdp)))
    step = step_lib.jit_train_step(step_lib.make_train_step(loss_fn, tx, schedule, cfg.train, mesh),
                                   shardings, mesh, {"motion": 3, "audio": 3})
    losses, gnorms = [], []
    from gesture_jax.training.loop import _global_batch
    for b in batches:
        local = {k: v[jax.process_index() * (len(v) // jax.process_count()):
                       (jax.process_index() + 1) * (len(v) // jax.process_count())] for k, v in b.items()}
        state, m = step(state, _global_batch(local, mesh))
        losses.append(float(m["loss"]))
        gnorms.append(float(m["grad_norm"]))
    from jax.experimental import multihost_utils
    params = {shd.path_to_str(p): np.asarray(multihost_utils.process_allgather(x, tiled=True))
              for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    specs = {shd.path_to_str(p): str(x.sharding.spec)
             for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    return losses, params, gnorms, specs


def _compare(ref, other) -> dict:
    import numpy as np
    l0, p0, g0, _ = ref
    l1, p1, g1, specs = other
    scale = max(float(np.max(np.abs(v))) for v in p0.values())
    leaf_err = {k: float(np.max(np.abs(p1[k] - p0[k]))) for k in p0}
    return {"loss_ref": l0, "loss": l1,
            "loss_rel": max(abs(a - b) / abs(b) for a, b in zip(l1, l0)),
            "gnorm_rel": max(abs(a - b) / abs(b) for a, b in zip(g1, g0)),
            "param_rel_max": max(leaf_err.values()) / scale,
            "worst_leaf": max(leaf_err, key=leaf_err.get),
            "sharded_leaves": sum(1 for s in specs.values() if s != "PartitionSpec()"),
            "specs_sample": {k: specs[k] for k in list(specs)[:4]}}


def _batches(n: int, b: int, seed: int = 0):
    import numpy as np
    import training_fixtures as tf
    rng = np.random.default_rng(seed)
    return [tf.synthetic_batch(rng, b) for _ in range(n)]


def sharded_equality(specs: list[str], steps: int = 2, accum: int = 1) -> dict:
    """Each mesh SPEC against one device. ``SPEC@N`` trains with ``train.grad_accum=N``
    instead of ``accum`` (and is compared with the unsharded run that accumulates alike)."""
    import jax
    import training_fixtures as tf
    refs: dict[int, tuple] = {}
    out = {}
    for item in specs:
        spec, _, n = item.partition("@")
        a = int(n) if n else accum
        cfg = tf.tiny_config(grad_accum=a)
        batches = _batches(steps, int(cfg.train.batch_size))
        if a not in refs:
            refs[a] = _train(cfg, "data:1", batches, devices=jax.devices()[:1])
        out[item] = _compare(refs[a], _train(cfg, spec, batches))
    return out


def lockstep(out: str, steps: int = 3) -> dict:
    """Run from every process of a jax.distributed job (or alone); process 0 saves the results."""
    import jax
    import numpy as np
    from gesture_jax.parallel import distributed
    distributed.initialize()
    import training_fixtures as tf
    cfg = tf.tiny_config()
    spec = "data:-1,fsdp:2" if jax.device_count() % 2 == 0 else "data:-1"
    losses, params, gnorms, _ = _train(cfg, spec, _batches(steps, int(cfg.train.batch_size)))
    if jax.process_index() == 0:
        np.savez(out, losses=np.asarray(losses), **{"p/" + k: v for k, v in params.items()})
    return {"process": jax.process_index(), "processes": jax.process_count(),
            "devices": jax.device_count(), "losses": losses}


def train_run(data: str, workdir: str, stop_after: str) -> dict:
    """loop.train on the tiny prepared data from every process of a jax.distributed job
    (sharded data:-1,fsdp:2 checkpoints); stderr carries the resume messages."""
    import jax
    from gesture_jax.parallel import distributed
    distributed.initialize()
    import training_fixtures as tf
    from gesture_jax.training import loop
    cfg = tf.tiny_config(data)
    with cfg.unlocked():
        cfg.mesh.shape = "data:-1,fsdp:2"
        cfg.train.num_steps, cfg.train.checkpoint_every, cfg.train.log_every = 9, 3, 1
    stop = int(stop_after) or None
    res = loop.train(cfg, workdir, stop_after=stop, progress=False)
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("train_run_done")  # leave together: jax's shutdown barrier has a deadline
    return {"process": jax.process_index(), "processes": jax.process_count(), "step": res.step,
            "losses": {r["step"]: r["loss"] for r in res.history if "loss" in r}}


def reshard_restore(workdir: str) -> dict:
    """Save on one mesh, restore onto others: every array equal, new layout applied."""
    import jax
    import numpy as np
    import training_fixtures as tf
    from gesture_jax.parallel import mesh as mesh_lib, sharding as shd
    from gesture_jax.training import checkpoint as ckpt_lib, state as state_lib

    cfg = tf.tiny_config()
    rules, min_size = shd.rules_from_config(cfg.mesh), int(cfg.mesh.min_shard_size)
    model_fn = tf.tiny_model_fn(cfg)
    mesh = mesh_lib.make_mesh("fsdp:4,tensor:2")
    state, *_ = state_lib.create_train_state(model_fn, cfg.train, 0, mesh, rules, min_size)
    # Make every leaf distinctive (Adam moments are zero after init).
    state = jax.tree_util.tree_map(
        lambda x: x + 0.5 if np.issubdtype(x.dtype, np.floating) else x, state)
    ck = ckpt_lib.Checkpointer(workdir, keep=2)
    ck.save(state, {"position": 7})
    ck.wait()
    want = [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]
    out = {}
    for spec, devs in (("data:2,fsdp:2,tensor:2", None), ("fsdp:8", None), ("data:1", jax.devices()[:1])):
        m2 = mesh_lib.make_mesh(spec, devs)
        abstract, shardings, *_ = state_lib.abstract_train_state(model_fn, cfg.train, 0, m2, rules, min_size)
        restored, data = ck.restore(abstract)
        got = jax.tree_util.tree_leaves(restored)
        equal = all(np.array_equal(np.asarray(g), w) for g, w in zip(got, want)) and len(got) == len(want)
        layout = all(g.sharding == s for g, s in zip(got, jax.tree_util.tree_leaves(shardings)))
        out[spec] = {"equal": equal, "layout": layout, "data": data, "step": int(restored.step)}
    ck.close()
    return out


def restore_fingerprint(workdir: str) -> dict:
    """Restore the newest checkpoint of a train_run workdir (model state, no data state) onto a
    data:-1 mesh of however many processes run this; a fingerprint of every parameter."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils
    from gesture_jax.parallel import distributed
    distributed.initialize()
    import training_fixtures as tf
    from gesture_jax.parallel import mesh as mesh_lib, sharding as shd
    from gesture_jax.training import checkpoint as ckpt_lib, state as state_lib

    cfg = tf.tiny_config()
    mesh = mesh_lib.make_mesh("data:-1")
    abstract, *_ = state_lib.abstract_train_state(tf.tiny_model_fn(cfg), cfg.train, 0, mesh,
                                                  shd.rules_from_config(cfg.mesh), int(cfg.mesh.min_shard_size))
    ck = ckpt_lib.Checkpointer(f"{workdir}/checkpoints")
    state, _ = ck.restore(abstract, with_data=False)
    leaves = [np.asarray(multihost_utils.process_allgather(x, tiled=True), np.float64)
              for x in jax.tree_util.tree_leaves(state.params)]
    ck.close()
    multihost_utils.sync_global_devices("restore_fingerprint_done")
    return {"process": jax.process_index(), "processes": jax.process_count(), "step": int(state.step),
            "fingerprint": [float(np.sum(x)) + float(np.sum(x * x)) for x in leaves]}


if __name__ == "__main__":
    name, args = sys.argv[1], sys.argv[2:]
    if name == "sharded_equality":
        res = sharded_equality(args)
    elif name == "reshard_restore":
        res = reshard_restore(args[0])
    elif name == "train_run":
        res = train_run(*args)
    elif name == "restore_fingerprint":
        res = restore_fingerprint(args[0])
    elif name == "lockstep":
        res = lockstep(args[0])
    else:
        raise SystemExit(f"unknown check {name!r}")
    print(json.dumps(res))
