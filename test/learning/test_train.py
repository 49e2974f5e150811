"""Training on tiny budgets: a short run on a coarse copy of the bundled CT lowers the InfoNCE
loss, writes loadable weights and resumes; several CTs are drawn batch by batch with a bounded
cache, a new patient per batch, validation per held-out CT, and two data-parallel processes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rayemb_ros.geometry.volume import find_volumes
from rayemb_ros.learning.checkpoint import load_encoder, weights_digest
from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.learning.model import Encoder, EncoderConfig
from rayemb_ros.learning.objective import batch_similarity, infonce_loss
from rayemb_ros.learning.pairs import PairSampler, PatientPool, Prefetch, batch_rng
from rayemb_ros.learning.train import train


def test_short_training_lowers_the_loss(coarse_ct, tmp_path):
    ct = coarse_ct
    config = TrainConfig(
        volumes=(str(ct),), steps=30, batch=2, templates=3, points=24, lr=3e-3, warmup=1, landmark_pool=300,
        val_frames=2, val_every=30, ckpt_every=15, device="cpu",
        encoder=EncoderConfig(widths=(8, 16, 16, 16), image_size=48),
    )
    sampler = PairSampler(config, torch.device("cpu"))
    probe = [sampler.sample(np.random.default_rng([7, i])) for i in range(3)]

    def loss_of(encoder):
        with torch.no_grad():
            return float(np.mean([infonce_loss(batch_similarity(encoder.eval(), b, 3), b, config.tau).item() for b in probe]))

    torch.manual_seed(config.seed)
    before = loss_of(Encoder(config.encoder))
    out = tmp_path / "w.pt"
    summary = train(config, out, progress=False)
    trained, meta = load_encoder(out)
    after = loss_of(trained)
    assert after < before - 0.1, (before, after)
    assert meta["train"]["steps"] == 30 and summary["steps"] == 30
    assert (tmp_path / "w.pt.json").exists()
    # Resuming a finished run does nothing more and keeps the result.
    assert train(config, out, progress=False)["steps"] == 30


TINY = dict(batch=2, templates=3, points=16, landmark_pool=200, val_frames=2, device="cpu",
            encoder=EncoderConfig(widths=(8, 16, 16, 16), image_size=48))


@pytest.fixture(scope="module")
def three_cts(coarse_ct, tmp_path_factory):
    """Three training CTs: the coarse bundled CT under three names (the pool keys CTs by spec)."""
    folder = tmp_path_factory.mktemp("cts")
    for name in ("a", "b", "c"):
        shutil.copy(coarse_ct, folder / f"{name}.nii.gz")
    return folder


def test_every_batch_draws_a_ct_and_the_cache_stays_bounded(three_cts):
    specs = tuple(find_volumes(three_cts))
    assert [Path(s).name for s in specs] == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    pool = PatientPool(TrainConfig(volumes=specs, max_cached_volumes=2, **TINY), torch.device("cpu"))
    drawn, cached = set(), []
    for step in range(16):
        rng = batch_rng(0, step)
        drawn.add(specs[int(np.random.default_rng([0, step]).integers(len(specs)))])
        pool.batch(rng)
        cached.append(pool.cached)
    assert drawn == set(specs) and max(cached) == 2  # more CTs than the bound: loaded again, never kept


def test_a_new_patient_per_batch_keeps_the_landmarks_on_the_anatomy(coarse_ct):
    """With anatomy on, each batch's CT is a variant, its landmarks carried into it: they
    still project where the query shows the same bone (their pixels stay valid)."""
    config = TrainConfig(volumes=(str(coarse_ct),), anatomy=True, **TINY)
    pool = PatientPool(config, torch.device("cpu"))
    a, b = pool.batch(batch_rng(0, 1)), pool.batch(batch_rng(0, 2))
    assert a.valid.any() and b.valid.any()
    assert not torch.equal(a.queries, b.queries)
    assert pool.cached == 1  # the source CT; variants are made per batch, not kept


def test_queries_as_an_operating_room_makes_them_keep_the_templates_and_the_geometry(coarse_ct, monkeypatch):
    """With operating_room on, queries get the room's look and nothing else of the batch changes:
    the templates stay clean, the pixels and valid points are the plain batch's; a look that
    changes nothing gives the plain queries exactly, and an instrument's metal shows as density."""
    from rayemb_ros.geometry.camera import project
    from rayemb_ros.imaging import operating_room
    from rayemb_ros.learning import pairs

    cpu = torch.device("cpu")
    plain = PairSampler(TrainConfig(volumes=(str(coarse_ct),), **TINY), cpu)
    room = PairSampler(TrainConfig(volumes=(str(coarse_ct),), operating_room=1.0, **TINY), cpu)
    a, b = plain.sample(batch_rng(0, 3)), room.sample(batch_rng(0, 3))
    for name in ("templates", "uv_query", "uv_templates", "valid"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.queries, b.queries)

    monkeypatch.setattr(pairs, "training_look", lambda rng, anchors: operating_room.Look())
    assert torch.equal(room.sample(batch_rng(0, 3)).queries, a.queries)

    # A thick steel rod through the CT centre, along the patient's long axis (z).
    centre = room.volume.center
    rod = operating_room.Rod(tuple(centre - [0, 0, 60]), tuple(centre + [0, 0, 60]), 4.0, operating_room.STEEL_PER_MM)
    monkeypatch.setattr(pairs, "training_look", lambda rng, anchors: operating_room.Look(rods=(rod,)))
    poses = pairs.sample_poses(np.random.default_rng(0), 2, centre)
    detectors = [room.template_detector] * 2
    with_rod = room.render_queries(np.random.default_rng(5), poses, detectors)
    without = plain.render_queries(np.random.default_rng(5), poses, detectors)
    for i in range(2):
        u, v = np.round(project(detectors[i].K, poses[i], centre[None])[0]).astype(int)
        near = (slice(v - 1, v + 2), slice(u - 1, u + 2))
        assert with_rod[i, 0][near].mean() > without[i, 0][near].mean() + 0.05


def test_validation_on_held_out_cts_is_reported_per_ct(three_cts, tmp_path):
    specs = find_volumes(three_cts)
    config = TrainConfig(volumes=(specs[0],), val_volumes=tuple(specs[1:]), steps=2, val_every=2, ckpt_every=2, **TINY)
    summary = train(config, tmp_path / "w.pt", progress=False)
    assert set(summary["val_px_per_volume"]) == set(specs[1:])
    assert all(np.isfinite(v) for v in summary["val_px_per_volume"].values())
    assert load_encoder(tmp_path / "w.pt")[1]["metrics"]["val_px_per_volume"] == summary["val_px_per_volume"]


@pytest.mark.slow
def test_two_processes_train_data_parallel_and_resume(coarse_ct, tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks end with the same weights and one
    validation number, one checkpoint is written (it loads like a single-process one), and a
    second run with more steps continues where the first stopped."""
    out = tmp_path / "ddp.pt"
    said = tmp_path.parent / f"{tmp_path.name}_ranks"  # what each rank reports (its own file: no interleaving)
    said.mkdir()

    def torchrun(steps: int) -> dict[str, tuple[str, str]]:
        code = (
            "import os, torch\n"
            "from pathlib import Path\n"
            "from rayemb_ros.learning.config import TrainConfig\n"
            "from rayemb_ros.learning.model import EncoderConfig\n"
            "from rayemb_ros.learning.train import train\n"
            "torch.set_num_threads(1)\n"
            f"config = TrainConfig(volumes=({str(coarse_ct)!r},), steps={steps}, val_every=3, ckpt_every=3, batch=2,"
            " templates=3, points=16, landmark_pool=200, val_frames=4, device='cpu',"
            " encoder=EncoderConfig(widths=(8, 16, 16, 16), image_size=48))\n"
            f"summary = train(config, Path({str(out)!r}), progress=False)\n"
            f"Path({str(said)!r}, 'rank' + os.environ['RANK']).write_text(f\"{{summary['weights']}} {{summary['val_px_median']}}\")\n"
        )
        done = subprocess.run([str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
                               "--no-python", sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        return {p.name[4:]: tuple(p.read_text().split()) for p in said.iterdir()}

    first = torchrun(3)
    assert set(first) == {"0", "1"} and first["0"] == first["1"]  # same weights, same gathered validation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.pt", "ddp.pt.json", "ddp.pt.train-state.pt"]
    encoder, meta = load_encoder(out)
    assert meta["metrics"]["weights"] == first["0"][0] == weights_digest(encoder)
    second = torchrun(6)
    assert second["0"] == second["1"] and second["0"][0] != first["0"][0]
    history = load_encoder(out)[1]["metrics"]["history"]
    assert [h["step"] for h in history] == [3, 6]  # resumed at step 3, not started again


def test_prefetched_batches_are_those_made_on_demand(coarse_ct):
    config = TrainConfig(volumes=(str(coarse_ct),), **TINY)
    # two pools: a renderer belongs to one thread (the training loop only consumes batches)
    ahead_pool, pool = PatientPool(config, torch.device("cpu")), PatientPool(config, torch.device("cpu"))
    prefetch = Prefetch(lambda step: ahead_pool.batch(batch_rng(0, step)), steps=6)
    for step in (3, 4, 5):  # started at a resumed step
        ahead, now = prefetch(step), pool.batch(batch_rng(0, step))
        assert torch.equal(ahead.queries, now.queries) and torch.equal(ahead.uv_query, now.uv_query)


def test_a_region_is_held_out_of_training(coarse_ct):
    """--holdout-below-mm: training sees the slices above the plane only, in place."""
    from rayemb_ros.geometry.volume import load_volume

    volume = load_volume(coarse_ct)
    z = volume.voxels_to_ct(np.array([[0.0, 0.0, k] for k in range(volume.shape[2])]))[:, 2]
    plane = float(np.percentile(z, 40))
    above = volume.above(plane)
    kept_z = above.voxels_to_ct(np.array([[0.0, 0.0, k] for k in range(above.shape[2])]))[:, 2]
    assert kept_z.min() >= plane and above.shape[2] == (z >= plane).sum()
    k0 = int(np.flatnonzero(z >= plane).min())
    np.testing.assert_array_equal(above.hu, volume.hu[:, :, k0:])  # the same voxels, in the same place
    pool = PatientPool(TrainConfig(volumes=(str(coarse_ct),), holdout_below_mm=plane, **TINY), torch.device("cpu"))
    assert pool.sampler(str(coarse_ct)).pool[:, 2].min() >= plane - 1e-6  # landmarks above the plane only
