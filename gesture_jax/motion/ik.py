"""Joint positions <-> BVH joint rotations: the node layout, forward positions and inverse kinematics.

Methods that predict joint positions (Kucherenko 2019, DiffGesture, LDMC) must still hand the
user a BVH on the source skeleton. A position set does not say how a bone twists about its own
axis, so the inverse is chosen, joint by joint in topological order (every frame at once):

  * a joint whose tracked children span a plane or more (hips with spine and legs, a chest with
    neck and shoulders, a hand with fingers): the proper rotation that best carries the
    children's rest offsets onto the target directions (Kabsch / SVD, each child weighted by its
    offset length) -- unique, so there is nothing to keep smooth;
  * a joint with one tracked child direction (an arm bone): the minimal (swing) rotation from the
    previous frame's rotation, so the twist moves as little as the positions allow; frame 0
    swings from the training-mean rotation. The recursion runs in the parent's frame, not in
    the world, so a body that turns round as a whole does not wind up its limbs' twist
    (parallel transport in the world would, by the solid angle the bone sweeps);
  * a joint without a usable child (a leaf, or children at zero offset) keeps its training-mean
    rotation relative to its parent, as MotionPipeline restores unselected joints.

"Tracked children" of a selected joint are the nodes below it reached through unselected joints
only, with those joints at their mean rotation (so any joint subset of the skeleton inverts), and
its End Site. Bone vectors are the training-mean local translations (the OFFSETs for joints
without position channels). A selected joint that has all three position channels (GENEA 2023
stores every joint like that, and its hips translation moves) gets the translation that puts it
exactly on its target; others keep their mean translation, so bones stay rigid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gesture_jax.motion.bvh import Skeleton
from gesture_jax.motion.kinematics import forward_kinematics_global
from gesture_jax.motion.rotations import matrix_to_quat, quat_to_matrix

__all__ = ["Node", "position_nodes", "node_names", "node_positions", "fk_node_positions", "minimal_rotation",
           "prefix_products", "IKRig", "inverse_kinematics"]

Node = tuple[int, bool]  # (joint index, False: the joint itself / True: that joint's End Site)
_EPS = 1e-6              # file units (cm): offsets / target vectors shorter than this have no direction


def position_nodes(sk: Skeleton, selected: Sequence[int]) -> list[Node]:
    """The selected joints in skeleton order, then the End Sites of selected joints (our node order).
    Not Kucherenko et al.'s: their evaluation/joints.txt is depth-first with each End Site right
    after its joint (..., Head, Site1, LeftShoulder, ...); methods/kucherenko/reference.py maps it."""
    sel = sorted(set(int(j) for j in selected))
    return [(j, False) for j in sel] + [(j, True) for j in sel if j in sk.end_sites]


def node_names(sk: Skeleton, nodes: Sequence[Node]) -> list[str]:
    """`Hips`, ..., `LeftHand_End` (an End Site is named after its joint)."""
    return [sk.names[j] + ("_End" if end else "") for j, end in nodes]


def node_positions(sk: Skeleton, nodes: Sequence[Node], world_pos: np.ndarray, world_rot: np.ndarray) -> np.ndarray:
    """[N, K, 3] node positions from world joint positions [N, J, 3] and rotations [N, J, 3, 3]."""
    out = []
    for j, end in nodes:
        if end:
            out.append(world_pos[:, j] + np.einsum("nij,j->ni", world_rot[:, j], sk.end_sites[j]))
        else:
            out.append(world_pos[:, j])
    return np.stack(out, axis=1)


def fk_node_positions(sk: Skeleton, nodes: Sequence[Node], rots: np.ndarray, trans: np.ndarray,
                      root_pos: np.ndarray | None = None) -> np.ndarray:
    """Forward kinematics to node positions [N, K, 3] from local rotations [N, J, 3, 3] and
    translations [N, J, 3]; root_pos [N, 3] replaces the root translation (None: keep it)."""
    root = trans[:, 0] if root_pos is None else root_pos
    pos, rot = forward_kinematics_global(sk.parents, sk.offsets, rots, root, trans)
    return node_positions(sk, nodes, pos, rot)


# ------------------------------------------------------------------------------------- rotation helpers

def minimal_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[..., 3, 3] the smallest rotation carrying unit vectors a [..., 3] onto b [..., 3].

    Built as the unit quaternion (1 + a.b, a x b) / norm, which is a proper rotation to rounding
    even for nearly opposite vectors; for opposite ones (any axis is minimal) a half turn about
    an axis perpendicular to a.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    q = np.concatenate([1.0 + np.sum(a * b, axis=-1, keepdims=True), np.cross(a, b)], axis=-1)  # [..., 4]
    opposite = np.linalg.norm(q, axis=-1) < 1e-12
    if np.any(opposite):
        ao = np.broadcast_to(a, q.shape[:-1] + (3,))[opposite]
        e = np.where((np.abs(ao[:, 0]) < 0.9)[:, None], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        q[opposite] = np.concatenate([np.zeros((len(ao), 1)), np.cross(ao, e)], axis=-1)
    return quat_to_matrix(q)


def prefix_products(S: np.ndarray) -> np.ndarray:
    """P [N, 3, 3] with P[t] = S[t] @ S[t-1] @ ... @ S[0] (a log2(N)-step parallel scan: the
    frame recursion of the swing solution without a Python loop over frames)."""
    P = np.array(S, dtype=np.float64, copy=True)
    shift = 1
    while shift < P.shape[0]:
        P[shift:] = P[shift:] @ P[:-shift].copy()
        shift *= 2
    return P


def _unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(v / |v|, |v| > eps) along the last axis; short vectors get a zero direction."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    ok = n[..., 0] > _EPS
    return np.where(ok[..., None], v / np.maximum(n, 1e-300), 0.0), ok


def _forward_fill(d: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, bool]:
    """Directions [N, 3] with invalid frames taking the last valid one (before the first valid
    frame: the first valid one); returns (filled, any valid)."""
    if not ok.any():
        return d, False
    idx = np.where(ok, np.arange(len(ok)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = int(np.argmax(ok))
    return d[idx], True


# ------------------------------------------------------------------------------------- the rig

@dataclass
class _JointPlan:
    mode: str                      # "kabsch" | "swing" | "rest"
    targets: list[int]             # node indices of the usable tracked children
    offsets: np.ndarray            # [T, 3] their offsets in this joint's frame (at the mean pose below)


@dataclass
class IKRig:
    """Everything about a skeleton + node layout that does not change per frame.

    rest_rots [J, 3, 3] / rest_trans [J, 3]: mean local rotation / translation of every joint
    (what untracked joints keep; the bone vectors the solution uses).
    """

    skeleton: Skeleton
    nodes: list[Node]
    rest_rots: np.ndarray
    rest_trans: np.ndarray
    plans: dict[int, _JointPlan]
    joint_node: dict[int, int]
    free_translation: set[int]

    @classmethod
    def build(cls, sk: Skeleton, nodes: Sequence[Node], rest_rots: np.ndarray | None = None,
              rest_trans: np.ndarray | None = None) -> "IKRig":
        J = sk.num_joints
        rest_rots = np.tile(np.eye(3), (J, 1, 1)) if rest_rots is None else np.asarray(rest_rots, np.float64)
        rest_trans = sk.offsets.copy() if rest_trans is None else np.asarray(rest_trans, np.float64)
        if rest_rots.shape != (J, 3, 3) or rest_trans.shape != (J, 3):
            raise ValueError(f"rest rotations/translations must be [{J}, 3, 3] / [{J}, 3], got "
                             f"{rest_rots.shape} / {rest_trans.shape}")
        nodes = [(int(j), bool(e)) for j, e in nodes]
        joint_node = {j: k for k, (j, e) in enumerate(nodes) if not e}
        end_node = {j: k for k, (j, e) in enumerate(nodes) if e}
        if 0 not in joint_node:
            raise ValueError("the node layout must hold the root joint")
        children: dict[int, list[int]] = {j: [] for j in range(J)}
        for c, p in enumerate(sk.parents):
            if p >= 0:
                children[p].append(c)

        def tracked(j: int, base: np.ndarray, M: np.ndarray, out: list[tuple[int, np.ndarray]]) -> None:
            for c in children[j]:
                off = base + M @ rest_trans[c]
                if c in joint_node:
                    out.append((joint_node[c], off))
                else:  # through an untracked joint at its mean rotation
                    tracked(c, off, M @ rest_rots[c], out)

        plans: dict[int, _JointPlan] = {}
        for j in joint_node:
            found: list[tuple[int, np.ndarray]] = []
            tracked(j, np.zeros(3), np.eye(3), found)
            if j in end_node:
                found.append((end_node[j], sk.end_sites[j]))
            found = [(k, o) for k, o in found if np.linalg.norm(o) > _EPS]  # zero offsets carry no direction
            if not found:
                plans[j] = _JointPlan("rest", [], np.zeros((0, 3)))
                continue
            offs = np.array([o for _, o in found])
            dirs = offs / np.linalg.norm(offs, axis=-1, keepdims=True)
            spread = max((np.linalg.norm(np.cross(dirs[0], d)) for d in dirs[1:]), default=0.0)
            if spread > 1e-3:
                plans[j] = _JointPlan("kabsch", [k for k, _ in found], offs)
            else:  # one direction (several collinear children: the longest decides)
                i = int(np.argmax(np.linalg.norm(offs, axis=-1)))
                plans[j] = _JointPlan("swing", [found[i][0]], offs[i:i + 1])
        free = {j for j in joint_node if sk.parents[j] >= 0 and len(set(sk.position_axes(j))) == 3}
        return cls(sk, nodes, rest_rots, rest_trans, plans, joint_node, free)

    def solve(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Node positions [N, K, 3] -> (local rotations [N, J, 3, 3], local translations [N, J, 3]).

        The root translation is the root node's position; forward kinematics of the result puts
        every node back on its target when the targets are reachable (exact for positions made
        by this skeleton), else carries each bone along its target direction.
        """
        sk = self.skeleton
        x = np.asarray(positions, np.float64)
        if x.ndim != 3 or x.shape[1:] != (len(self.nodes), 3):
            raise ValueError(f"positions must be [N, {len(self.nodes)}, 3], got {tuple(x.shape)}")
        N, J = x.shape[0], sk.num_joints
        rots = np.broadcast_to(self.rest_rots, (N, J, 3, 3)).copy()
        trans = np.broadcast_to(self.rest_trans, (N, J, 3)).copy()
        W = np.zeros((N, J, 3, 3))
        P = np.zeros((N, J, 3))
        for j in range(J):
            p = sk.parents[j]
            k = self.joint_node.get(j)
            if p < 0:
                Wp = np.broadcast_to(np.eye(3), (N, 3, 3))
                if k is not None:
                    trans[:, j] = x[:, k]
                P[:, j] = trans[:, j]
            else:
                Wp = W[:, p]
                if k is not None and j in self.free_translation:
                    trans[:, j] = np.einsum("nji,nj->ni", Wp, x[:, k] - P[:, p])  # Wp^T (target - parent)
                P[:, j] = P[:, p] + np.einsum("nij,nj->ni", Wp, trans[:, j])
            plan = self.plans.get(j)
            if plan is not None and plan.mode != "rest":
                v, ok = _unit(x[:, plan.targets] - P[:, j, None])             # [N, T, 3] world directions
                v = np.einsum("nji,ntj->nti", Wp, v)                          # in the parent's frame
                if plan.mode == "kabsch":
                    rots[:, j] = _kabsch(plan.offsets, v, ok)
                else:
                    rots[:, j] = _swing(self.rest_rots[j], plan.offsets[0], v[:, 0], ok[:, 0])
            W[:, j] = Wp @ rots[:, j]
        return rots, trans


def _kabsch(offsets: np.ndarray, v: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """[N, 3, 3] proper rotations R minimizing sum_i w_i |R u_i - v_i|^2 over unit rest directions
    u_i (offsets [T, 3], w_i = |offset_i|) and unit targets v [N, T, 3] (frames where a target is
    undefined, ok [N, T] False, leave it out)."""
    u = offsets / np.linalg.norm(offsets, axis=-1, keepdims=True)
    w = np.linalg.norm(offsets, axis=-1)[None, :] * ok                 # [N, T]
    H = np.einsum("nt,ti,ntj->nij", w, u, v)                          # [N, 3, 3] = sum w u v^T
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, -1, -2) @ np.swapaxes(U, -1, -2)))
    d[d == 0] = 1.0
    D = np.broadcast_to(np.eye(3), H.shape).copy()
    D[:, 2, 2] = d
    return np.swapaxes(Vt, -1, -2) @ D @ np.swapaxes(U, -1, -2)


def _swing(rest_rot: np.ndarray, offset: np.ndarray, v: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """[N, 3, 3] local rotations R_t with R_t u = v_t (u = offset direction, v [N, 3] unit targets in
    the parent's frame): R_0 = swing(rest_rot u -> v_0) rest_rot, R_t = swing(v_{t-1} -> v_t) R_{t-1}."""
    u = offset / np.linalg.norm(offset)
    v, any_ok = _forward_fill(v, ok)
    N = v.shape[0]
    if not any_ok:
        return np.broadcast_to(rest_rot, (N, 3, 3)).copy()
    S = np.empty((N, 3, 3))
    S[0] = minimal_rotation(rest_rot @ u, v[0]) @ rest_rot
    if N > 1:
        S[1:] = minimal_rotation(v[:-1], v[1:])
    R = quat_to_matrix(matrix_to_quat(prefix_products(S)))  # back onto SO(3) after the products
    # the products drift by rounding over long takes: a last (tiny) swing puts u exactly on v
    return minimal_rotation(np.einsum("nij,j->ni", R, u), v) @ R


def inverse_kinematics(sk: Skeleton, nodes: Sequence[Node], positions: np.ndarray,
                       rest_rots: np.ndarray | None = None,
                       rest_trans: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Node positions [N, K, 3] -> (local rotations [N, J, 3, 3], translations [N, J, 3]) on `sk`
    (rest_rots / rest_trans default to identity / the OFFSETs). One-shot form of IKRig."""
    return IKRig.build(sk, nodes, rest_rots, rest_trans).solve(positions)
