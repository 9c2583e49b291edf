"""Shared fixtures: tiny real media files written by the tests themselves (with a real tone).

The writers themselves are in ``helpers.py`` (import them from there in a test module).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import write_video  # noqa: F401  (tests/ is on sys.path: setup.cfg `pythonpath`)


@pytest.fixture
def make_video(tmp_path):
    """Factory: ``make_video("name.mp4", frames=..., ...)`` -> path of a written file."""
    def _make(name: str = "v.mp4", **kw) -> Path:
        return write_video(tmp_path / name, **kw)
    return _make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small matrices: one torch thread is faster than two fighting for 2 busy cores."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- the `slow` marker (setup.cfg) ---------------------------------------------------------------
# Tests that take 3 s or more on a 2-core CPU machine (`python -m pytest --durations=45`, setup
# included), kept here in one list rather than as decorators spread over the files.
# `python -m pytest` runs everything; `python -m pytest -m "not slow"` is the quick run.
# `tests/test_layers.py::test_every_slow_test_exists` keeps the list true to the files.
# Not here although slow: test_evaluate.py::test_skim_beats_uniform_on_sparse_evidence (most of its
# time is the module fixture, and test_costs_follow_the_formula reads the metrics.json it writes).
SLOW = (
    "test_student_training.py::test_synthetic_classify_then_features_separate_the_classes",  # 55 s
    "test_determinism.py::test_student_features_and_metrics_are_bitwise_identical",          # 29 s
    "test_demo.py::test_tiny_demo_end_to_end",                                               # 24 s
    "test_models.py::test_student_checkpoint_round_trip",                                    # 14 s
    "test_student_training.py::test_train_resume_checkpoints_and_metrics",                   # 13 s
    "test_train_skim.py::test_train_skim_lowers_the_loss_and_checkpoints",                   # 9 s
    "test_student_training.py::test_mixed_teacher_configs_are_refused",                      # 8 s
    "test_train_skim.py::test_resume_continues_and_refuses_other_options",                   # 6 s
    "test_student_training.py::test_one_distillation_step_lowers_the_loss",                  # 6 s
    "test_student_training.py::test_cli_classify",                                           # 4 s
    "test_distributed.py::test_killed_worker_loses_nothing_and_doubles_nothing",             # 4 s
    "test_distributed.py::test_two_workers_equal_one_and_decode_failure_recorded_once",      # 4 s
    "test_models.py::test_audio_trunk_reduces_band_before_time",                             # 4 s
    "test_models.py::test_teacher_local_weights_and_offline_error",                          # 3 s
    "test_synthetic.py::test_deterministic_for_a_seed_and_different_across_seeds",           # 3 s
    "test_models.py::test_student_output_shapes_and_dtypes",                                 # 3 s
    "test_cli.py::test_a_piped_train_student_log_has_no_redraws",                             # 3-6 s
    # a second measurement (19:50, busy machine), tests added since
    "test_recipe.py::test_readme_real_data_block_runs_as_written",                            # 96 s
    "test_evaluate.py::test_all_listed_videos_count_failures_as_misses",                      # 11 s
    "test_student_training.py::test_fine_tune_a_distilled_student_on_the_store_classes",     # 10 s
    "test_features_stage.py::test_teacher_stage_outputs_match_the_model",                    # 4 s
    "test_model_stages.py::test_teacher_run_batch_equals_run_per_video_bitwise_on_cpu",      # 4 s
    "test_train_skim.py::test_long_runs_checkpoint_every_few_epochs_and_resume_exactly",     # 8 s
    "test_recipe_release.py::test_readme_release_block_runs_as_written",                    # 60 s
    "test_release.py::test_export_student_as_their_checkpoint",                              # 4 s
    "test_own_datasets.py::test_own_data_set_end_to_end",             # 2 x 70 s at load 10 (h19)
)


def pytest_collection_modifyitems(config, items):
    slow = set(SLOW)
    for item in items:
        if f"{item.path.name}::{item.originalname}" in slow:
            item.add_marker(pytest.mark.slow)
