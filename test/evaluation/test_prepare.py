"""`rayemb prepare` on a coarse copy of the bundled CT (3 self-check frames): the bundle's
files and record, the self-check's numbers from its own replay, the estimator loading the
bundle (its weights, its pose grade), and every way a bundle is refused with nothing
half-loaded."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from rayemb_ros.estimation.bundle import RECORD, SCENE, WEIGHTS, BundleError
from rayemb_ros.estimation.estimator import Estimator
from rayemb_ros.evaluation.prepare import PrepareConfig, prepare
from rayemb_ros.learning.checkpoint import DEFAULT_CHECKPOINT, load_encoder, save_weights, weights_digest
from rayemb_ros.params import Params


@pytest.fixture(scope="module")
def bundle(coarse_ct, tmp_path_factory):
    """A prepared bundle of a copy of the coarse CT (the copy may be changed by a test)."""
    base = tmp_path_factory.mktemp("prepared")
    ct = base / "ct.nii.gz"
    shutil.copy(coarse_ct, ct)
    record = prepare(PrepareConfig(str(ct), base / "bundle", device="cpu", frames=3, size=128), log=lambda _: None)
    return base / "bundle", ct, record


def test_the_bundle_holds_the_scene_the_weights_and_the_self_check(bundle):
    folder, ct, record = bundle
    assert {RECORD, WEIGHTS, SCENE, "self_check"} <= {p.name for p in folder.iterdir()}
    on_disk = json.loads((folder / RECORD).read_text())
    assert on_disk["ct_path"] == str(ct.resolve()) and on_disk["software"] and on_disk["weights_digest"]
    check = record.self_check
    metrics = json.loads((folder / "self_check" / "metrics.json").read_text())
    assert check.frames == 3 == metrics["frames"]  # the numbers are the self-check replay's own
    assert check.gfr10_percent == metrics["gfr_percent"]["10"] and check.refused == 3 - metrics["frames_ok"]
    assert on_disk["self_check"]["passed"] == check.passed and on_disk["self_check"]["verdict"] == check.verdict
    assert (folder / "self_check" / "report.html").is_file()


def test_the_estimator_registers_with_the_bundle_and_grades_by_its_self_check(bundle):
    folder, _, record = bundle
    estimator = Estimator(Params(device="cpu"))
    info = estimator.load_volume(str(folder))
    assert info.weights == f"bundle {record.weights_digest}" and info.self_check == record.self_check.verdict
    assert estimator.scene.encoder is not None and len(estimator.scene.landmarks) == info.num_landmarks
    assert estimator.pose_grade.reasons == record.grade_reasons
    failed = replace(record.self_check, published_over_10mm=1)  # as if a wrong pose had been published
    assert not failed.passed and replace(record, self_check=failed).grade_reasons[0].startswith(
        "the bundle's self-check: fail")
    assert replace(record, self_check=None).grade_reasons == ("the bundle has no self-check",)


def refused(folder, params=Params(device="cpu")) -> str:
    """The one line a refused bundle gets; the estimator keeps the CT it had."""
    estimator = Estimator(params)
    estimator.load_volume("example")
    with pytest.raises(BundleError) as caught:
        estimator.load_volume(str(folder))
    assert estimator.scene.source == "example"  # nothing half-loaded
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_bundle_is_refused_when_it_is_not_what_it_says(bundle, tmp_path):
    folder, ct, record = bundle
    assert "other settings" in refused(folder, Params(device="cpu", num_landmarks=600))
    def other_weights(copy):
        encoder, meta = load_encoder(copy / WEIGHTS)
        with torch.no_grad():
            next(encoder.parameters()).add_(1e-3)
        save_weights(copy / WEIGHTS, encoder, {k: v for k, v in meta.items() if k != "encoder"})

    for broken, damage, reason in [
        ("no_weights", lambda f: (f / WEIGHTS).unlink(), "weights.pt is missing"),
        ("bad_weights", lambda f: (f / WEIGHTS).write_bytes(b"not torch"), "not a rayemb checkpoint, or corrupt"),
        ("other_weights", other_weights, "is not the weights the bundle was made with"),
        ("no_record", lambda f: (f / RECORD).write_text("{"), "bundle.json cannot be read"),
    ]:
        copy = tmp_path / broken / "bundle"
        shutil.copytree(folder, copy)
        damage(copy)
        assert reason in refused(copy), broken
    # last: the CT file changed after the bundle was made
    data = ct.read_bytes()
    ct.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    try:
        assert "changed since the bundle was made" in refused(folder)
    finally:
        ct.write_bytes(data)


@pytest.mark.slow
def test_a_fine_tune_says_its_time_first_and_its_weights_are_the_bundles(coarse_ct, tmp_path):
    said = []
    record = prepare(PrepareConfig(str(coarse_ct), tmp_path / "tuned", device="cpu", finetune_steps=1, frames=2,
                                   size=64), log=said.append)
    assert said[0].startswith("fine-tune: 1 steps on") and " min on cpu" in said[0]
    shipped = load_encoder(DEFAULT_CHECKPOINT)[0]
    tuned = load_encoder(tmp_path / "tuned" / WEIGHTS)[0]
    assert record.finetune_steps == 1 and record.weights_digest == weights_digest(tuned) != weights_digest(shipped)


def test_an_adapted_head_is_the_bundles_and_only_it_differs(coarse_ct, tmp_path):
    said = []
    record = prepare(PrepareConfig(str(coarse_ct), tmp_path / "adapted", device="cpu", frames=2, size=64,
                                   adapt_head_steps=2, adapt_head_batches=1), log=said.append)
    assert said[0].startswith("adapting the encoder's last layer") and "px ->" in said[1]
    shipped = load_encoder(DEFAULT_CHECKPOINT)[0].state_dict()
    adapted = load_encoder(tmp_path / "adapted" / WEIGHTS)[0]
    assert record.weights_digest == weights_digest(adapted) and "last layer adapted" in record.weights_from
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(v, shipped[k])}
    assert changed and all(k.startswith("head.") for k in changed)


def test_a_fine_tune_and_a_head_adaptation_are_one_or_the_other(tmp_path, capsys):
    from rayemb_ros.cli import main

    assert main(["prepare", "--volume", "example", "--out", str(tmp_path / "b"), "--finetune-steps", "1",
                 "--adapt-head-steps", "1"]) == 2
    assert "one or the other" in capsys.readouterr().err
