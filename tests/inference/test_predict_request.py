"""``medimg predict`` is one :class:`PredictRequest` handed to the model's cohort runner: every flag
lands in the request under its own name, and a Python caller builds the same value."""

from __future__ import annotations

import argparse

import pytest

import medimg.inference.predict_cohort as predict_cohort
from medimg.cli import predict
from medimg.errors import ConfigError
from medimg.inference.request import CohortRun, PredictRequest


def _request_of(argv: list[str], monkeypatch) -> PredictRequest:
    """The request ``medimg predict ARGV`` hands its cohort runner."""
    parser = argparse.ArgumentParser()
    predict.register(parser.add_subparsers())
    given = []

    def runner(request):
        given.append(request)
        return {}, [], 0

    monkeypatch.setattr(predict_cohort, "cohort_runner", lambda model: runner)
    assert predict.execute(parser.parse_args(argv)) == 0
    return given[0]


def test_every_flag_of_medimg_predict_lands_in_the_request(monkeypatch) -> None:
    argv = ["predict", "--model", "m1", "--model", "m2", "a.nii.gz", "b/", "--out", "o", "--tracking-uri", "u",
            "--tta", "--overlap", "0.5", "--sw-batch-size", "4", "--device", "cpu", "--shard", "1/2",
            "--prefetch", "3", "-j", "2", "--no-progress", "--dicom", "on", "--pacs", "http://p",
            "--pacs-study", "1.2", "--pacs-modality", "CT", "--pacs-filter", "A=1", "--pacs-filter", "B=2",
            "--no-store", "--class-index", "1", "--count", "5", "--seed", "7"]  # fmt: skip
    request = _request_of(argv, monkeypatch)
    assert request == PredictRequest(
        ["m1", "m2"], ["a.nii.gz", "b/"], "o", tracking_uri="u", tta=True, overlap=0.5, sw_batch_size=4,
        device="cpu", shard="1/2", prefetch=3, workers=2, dicom="on", pacs="http://p", pacs_study="1.2",
        pacs_modality="CT", pacs_filter=["A=1", "B=2"], progress=False, store=False, class_index=1, count=5,
        seed=7,
    )  # fmt: skip
    assert request.options_set() == PredictRequest.option_names()  # every option set: none left behind
    assert request.cohort_run(["case"]) == CohortRun(["case"], "o", 3, False, (1, 2), ())


def test_the_defaults_of_the_command_are_the_requests(monkeypatch) -> None:
    request = _request_of(["predict", "model", "scan.nii.gz", "--out", "o"], monkeypatch)
    assert request == PredictRequest("model", ("scan.nii.gz",), "o") and request.options_set() == []


def test_options_a_runner_does_not_take_are_refused_by_their_flags_in_the_commands_order() -> None:
    request = PredictRequest(
        "m", [], "o", count=2, pacs_filter=["A=1"], tta=True, shard="0/2", progress=False
    )
    with pytest.raises(ConfigError, match=r"^m: a toy model does not take --tta, --pacs-filter, --count$"):
        request.refuse_options(("shard", "progress"), "a toy model")
    with pytest.raises(
        ConfigError, match=r"\['m', 'n'\]: a toy model is used alone \(no ensembles of them\)"
    ):
        PredictRequest(["m", "n"], [], "o").one_model("a toy model")
    with pytest.raises(ConfigError, match="--shard '2/2': expected 0 <= i < n"):
        PredictRequest("m", [], "o", shard="2/2").cohort_run([])
