"""The suite's mutation check: each entry is a one-line change to the package that breaks one
behaviour; it is made in a scratch copy of the tree and the tests named beside it must then fail.

    python .ci/mutants.py          # all of them (4.2 minutes on 2 idle cores)
    python .ci/mutants.py 3 12     # just these
    python .ci/mutants.py --list   # their numbers, what each breaks and the file it changes

Prints one line per change: CAUGHT (its tests failed) or MISSED (they passed: a blind test);
exits 1 when any is missed. Not part of `.ci/run`; run it after changing a test or the code it
guards (an entry whose line no longer exists stops the run, naming it).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
M = [
    (
        "resume ignores its checkpoint (retrains from scratch)",
        "counterarg/training/loop.py",
        "        return _train_locked(config, out, report, resume_from, progress)",
        "        return _train_locked(config, out, report, None, progress)",
        ["tests/training/test_loop.py::test_resume_equals_uninterrupted"],
    ),
    (
        "encoder weights never change (encoder lr 0)",
        "counterarg/training/trainer.py",
        '            groups.append({"params": enc_params, "lr": config.encoder_lr})',
        '            groups.append({"params": enc_params, "lr": 0.0})',
        [
            "tests/model/test_features.py::test_finetuning_changes_exactly_the_trainable_weights",
            "tests/training/test_loop.py::test_the_checkpoint_holds_exactly_the_trained_encoder_weights",
        ],
    ),
    (
        "top:N also trains the layer below (lower layer not frozen)",
        "counterarg/model/features.py",
        '        parts: dict[str, nn.Module] = {"layers": nn.ModuleList(model.encoder.layer[first:])}',
        '        parts: dict[str, nn.Module] = {"layers": nn.ModuleList(model.encoder.layer[max(first - 1, 0):])}',
        ["tests/model/test_features.py::test_finetuning_changes_exactly_the_trainable_weights"],
    ),
    (
        "the index field is ignored (always exact)",
        "counterarg/training/trainer.py",
        "                backend,",
        '                "exact",',
        ["tests/training/test_loop.py::test_index_backends_give_identical_runs"],
    ),
    (
        "trials report the job id instead of their node",
        "counterarg/sweep/trainable.py",
        "    node_id = ray.get_runtime_context().get_node_id()",
        "    node_id = ray.get_runtime_context().get_job_id()",
        ["tests/sweep/test_runner.py::test_two_node_cluster_kill_driver_and_restore"],
    ),
    (
        "evaluate --checkpoint ignores the checkpoint's weights",
        "counterarg/model/biencoder.py",
        "        model.load_state(saved)",
        "        pass",
        ["tests/test_cli.py::test_evaluate_checkpoint_gives_the_runs_own_validation_row"],
    ),
    (
        "zero-shot pools the [CLS] vector instead of the mean",
        "counterarg/nn/encoder.py",
        '    if pooling == "cls":',
        '    if pooling == "cls" or pooling == "mean":',
        ["tests/test_cli.py::test_evaluate_zero_shot_is_the_mean_pooled_encoder_ranked_by_cosine"],
    ),
    (
        "rank returns the farthest candidates first",
        "counterarg/retrieval/scorers.py",
        "    order = torch.sort(dist, stable=True).indices  # [C]",
        "    order = torch.sort(-dist, stable=True).indices  # [C]",
        ["tests/test_cli.py::test_rank_equals_a_direct_computation_and_caches_candidates"],
    ),
    (
        "rerank orders by the lowest probability",
        "counterarg/retrieval/scorers.py",
        "        re = torch.sort(-score, stable=True).indices",
        "        re = torch.sort(score, stable=True).indices",
        ["tests/test_cli.py::test_rank_equals_a_direct_computation_and_caches_candidates"],
    ),
    (
        "best epoch = the worst epoch (selection mode flipped)",
        "counterarg/evaluation/selection.py",
        '    return best is None or (value > best if mode == "max" else value < best)',
        '    return best is None or (value < best if mode == "max" else value > best)',
        [
            "tests/analysis/test_summary.py::test_markdown_and_files",
            "tests/sweep/test_runner.py::test_sweep_errored_trial_summary_and_tensorboard",
        ],
    ),
    (
        "the curves plot the best seed instead of the mean",
        "counterarg/analysis/plots.py",
        '        "mean": [sum(v) / len(v) for v in vals],',
        '        "mean": [max(v) for v in vals],',
        ["tests/analysis/test_summary.py::test_markdown_and_files"],
    ),
    (
        "HParams metrics logged at every epoch, not at the selected one",
        "counterarg/sweep/tensorboard.py",
        "            return int(best_epoch) == epoch",
        "            return True",
        ["tests/sweep/test_tensorboard.py::test_trials_log_their_metrics_by_name_and_the_sweep_columns"],
    ),
    (
        "HParams columns sorted by name again (TensorBoard's own order)",
        "counterarg/sweep/hparams_table.py",
        '    return [Column(f, f"{i + 1:02d} {f}", _kind(f)) for i, f in enumerate(order)]',
        "    return [Column(f, f, _kind(f)) for i, f in enumerate(order)]",
        ["tests/sweep/test_tensorboard.py::test_tensorboard_serves_the_sweep_columns_and_strategy_runs"],
    ),
    (
        "a strategy run averages its unfinished seeds too",
        "counterarg/sweep/strategy_runs.py",
        "        done = [r for r in members if r.finished]",
        "        done = list(members)",
        ["tests/sweep/test_tensorboard.py::test_strategy_runs_average_the_finished_seeds"],
    ),
    (
        "exact index: grouped-min path keeps too few groups",
        "counterarg/retrieval/neighbours.py",
        "        _, gi = torch.topk(grp.amin(-1), kk, dim=1, largest=False, sorted=False)  # [b, kk]",
        "        _, gi = torch.topk(grp.amin(-1), max(1, kk // 2), dim=1, largest=False, sorted=False)  # [b, kk]",
        ["tests/retrieval/test_index.py::test_exact_grouped_min_selection_is_exact"],
    ),
    (
        "feature cache key ignores max_length",
        "counterarg/model/features.py",
        '        "max_length": config.max_length,',
        '        "max_length": None,',
        ["tests/data/test_feature_cache.py::test_cache_key_follows_what_changes_the_features"],
    ),
    (
        "cache lock taken by no one (waiting locks never wait)",
        "counterarg/core/io.py",
        "        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)",
        "        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB) if wait else fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
        ["tests/data/test_feature_cache.py::test_a_second_builder_waits_for_the_first_and_builds_nothing"],
    ),
    (
        "bench eval passes when ranks disagree",
        "counterarg/bench/eval.py",
        "    return 0 if agree == len(task_names()) else 1",
        "    return 0",
        ["tests/bench/test_eval.py"],
    ),
    (
        "bench mining passes when ids differ",
        "counterarg/bench/mining.py",
        "        return 1\n    return 0",
        "        return 0\n    return 0",
        ["tests/bench/test_mining.py"],
    ),
    (
        "resume does not restore the top:N encoder weights",
        "counterarg/model/biencoder.py",
        '                self.features.load_checkpoint_state(saved["encoder"])',
        "                pass",
        ["tests/training/test_loop.py::test_resume_equals_uninterrupted"],
    ),
    (
        "resume forgets the weight picked on validation (fused_w)",
        "counterarg/model/biencoder.py",
        '        self.fused_w = saved["fused_w"]',
        "        self.fused_w = None",
        ["tests/training/test_loop.py::test_resume_equals_uninterrupted"],
    ),
    (
        "the fused score ignores its weight",
        "counterarg/retrieval/scorers.py",
        "    return weight * value.double() - distance.double()",
        "    return value.double() - distance.double()",
        ["tests/retrieval/test_scorers.py::test_fused_is_weight_times_log_odds_minus_distance"],
    ),
    (
        "a kill between the swap renames always rolls back",
        "counterarg/core/io.py",
        '        candidates = [(m.get("epoch", -1), str(t), t) for t in _temps(target) if (m := _complete(t, seal)) is not None]',
        "        candidates = []",
        ["tests/training/test_loop.py::test_resume_after_a_kill_between_the_swap_renames"],
    ),
    (
        "pooling=cls takes the token mean",
        "counterarg/nn/encoder.py",
        "        return last_hidden[:, 0]",
        "        return last_hidden.mean(1)",
        ["tests/model/test_features.py::test_cls_and_pooler_pooling_give_their_own_features_and_train"],
    ),
    (
        "test split scored every epoch regardless of test_every",
        "counterarg/training/trainer.py",
        '            if s != "test" or (cfg.test_every and ((epoch + 1) % cfg.test_every == 0 or last))',
        '            if s != "test" or (cfg.test_every)',
        ["tests/training/test_trainer.py::test_test_split_is_scored_only_on_due_epochs_and_the_last"],
    ),
    (
        "eval_training ignored",
        "counterarg/training/trainer.py",
        '                if s in self.corpus.splits and (s != "training" or config.eval_training)',
        '                if s in self.corpus.splits and (s != "training")',
        ["tests/training/test_trainer.py::test_eval_training_adds_training_split_metrics"],
    ),
    (
        "a NaN metric passes silently",
        "counterarg/training/loop.py",
        '            if isinstance(v, float) and not math.isfinite(v) and not k.startswith("time/"):',
        '            if isinstance(v, float) and not math.isfinite(v) and not k.startswith("time/") and False:',
        ["tests/training/test_loop.py::test_non_finite_metric_names_metric_and_epoch"],
    ),
    (
        "ASHA search samples lr from a point",
        "counterarg/sweep/space_file.py",
        '    "loguniform": (lambda where, v, field: _bounds(where, "loguniform", v, field), lambda b: tune.loguniform(*b)),',
        '    "loguniform": (lambda where, v, field: _bounds(where, "loguniform", v, field), lambda b: b[0]),',
        [
            "tests/sweep/test_spaces.py::test_margin_lr_space_draws_log_uniformly_inside_the_bounds",
            "tests/sweep/test_space_file.py::test_each_domain_kind_becomes_its_tune_domain_with_its_bounds",
        ],
    ),
    (
        "a space file's randint includes its upper bound",
        "counterarg/sweep/space_file.py",
        '    "randint": (lambda where, v, field: _bounds(where, "randint", v, field), lambda b: tune.randint(*b)),',
        '    "randint": (lambda where, v, field: _bounds(where, "randint", v, field), lambda b: tune.randint(b[0], b[1] + 1)),',
        ["tests/sweep/test_space_file.py::test_each_domain_kind_becomes_its_tune_domain_with_its_bounds"],
    ),
    (
        "a search's method fields override --set",
        "counterarg/sweep/space_file.py",
        "    start = {k: v for k, v in start.items() if k not in base}",
        "    start = dict(start)",
        ["tests/sweep/test_space_file.py::test_search_space_starts_from_the_method_and_set_wins_over_it"],
    ),
    (
        "a search's choices are checked against the start alone",
        "counterarg/sweep/space_file.py",
        "    if math.prod(len(v) for v in categorical.values()) > MAX_COMBINATIONS:",
        "    if True:",
        ["tests/sweep/test_space_file.py::test_choices_are_checked_together_not_against_the_start_alone"],
    ),
    (
        "a search selects on the test split",
        "counterarg/analysis/search_summary.py",
        "        v = stats[g].get(metric)",
        "        v = stats[g].get(TEST_COLUMNS[1])",
        ["tests/analysis/test_search_summary.py"],
    ),
    (
        "an existing sweep folder is reused without --resume",
        "counterarg/sweep/runner.py",
        "    if not resume and (work / TUNER_FILE).exists():",
        "    if False and not resume and (work / TUNER_FILE).exists():",
        ["tests/sweep/test_runner.py::test_existing_sweep_is_refused_and_errored_trials_run_again_on_resume"],
    ),
    (
        "--resume leaves errored trials errored",
        "counterarg/sweep/tuner.py",
        "        return tune.Tuner.restore(exp_path, trainable=runnable, resume_unfinished=True, resume_errored=True)",
        "        return tune.Tuner.restore(exp_path, trainable=runnable, resume_unfinished=True, resume_errored=False)",
        ["tests/sweep/test_runner.py::test_existing_sweep_is_refused_and_errored_trials_run_again_on_resume"],
    ),
    (
        "--resume retrains an errored trial from scratch",
        "counterarg/sweep/tuner.py",
        "        return tune.Tuner.restore(exp_path, trainable=runnable, resume_unfinished=True, resume_errored=True)",
        "        return tune.Tuner.restore(exp_path, trainable=runnable, resume_unfinished=True, restart_errored=True)",
        ["tests/sweep/test_failures.py::test_resume_continues_a_trial_that_errored_mid_way_from_its_checkpoint"],
    ),
    (
        "an error of the training is retried like a lost node",
        "counterarg/ray_internals.py",
        "        return should_recover(self) and (exc is None or is_system_failure(exc))",
        "        return should_recover(self)",
        ["tests/test_ray_internals.py::test_a_training_error_ends_its_trial_at_once_and_a_lost_worker_is_retried"],
    ),
    (
        "a lost worker ends its trial",
        "counterarg/sweep/tuner.py",
        "        failure_config=FailureConfig(max_failures=sweep.max_failures, fail_fast=False),",
        "        failure_config=FailureConfig(max_failures=0, fail_fast=False),",
        [
            "tests/sweep/test_failures.py::test_killed_worker_continues_from_its_checkpoint_and_a_training_error_is_final"
        ],
    ),
    (
        "PBT keeps Ray's stale STOP after a mid-save exploit",
        "counterarg/sweep/pbt.py",
        "        super()._exploit(tune_controller, trial, trial_to_clone)\n",
        "        return super()._exploit(tune_controller, trial, trial_to_clone)\n",
        ["tests/sweep/test_pbt.py::test_a_trial_exploited_mid_save_is_not_stopped_after_its_next_epoch"],
    ),
    (
        "encoder fingerprint constant",
        "counterarg/nn/encoder.py",
        "    return _content_digest(stats)\n",
        '    return "constant"\n',
        ["tests/data/test_feature_cache.py::test_feature_cache_key_follows_encoder_content_not_location"],
    ),
    (
        "corpus texts fingerprint constant",
        "counterarg/data/corpus.py",
        "        return cls(texts=texts, splits=splits, fingerprint=h.hexdigest()[:16])",
        '        return cls(texts=texts, splits=splits, fingerprint="constant")',
        ["tests/data/test_feature_cache.py::test_cache_key_follows_what_changes_the_features"],
    ),
    (
        "lock files followed through a symlink (no O_NOFOLLOW)",
        "counterarg/core/io.py",
        '    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)',
        '    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)',
        ["tests/core/test_io.py::test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched"],
    ),
    (
        "best/ not repaired after a kill between its renames",
        "counterarg/training/loop.py",
        '        for line in recover_dir(out / "checkpoint") + recover_dir(out / BEST_DIR) + remove_temp_files(out):',
        '        for line in recover_dir(out / "checkpoint") + remove_temp_files(out):',
        ["tests/evaluation/test_selection.py::test_best_is_repaired_after_a_kill_between_its_renames"],
    ),
    (
        "rank/evaluate take the checkpoint's cache_dir",
        "counterarg/config.py",
        "        return cls.from_dict({**saved, **here})",
        "        return cls.from_dict(saved)",
        ["tests/model/test_biencoder.py::test_a_checkpoints_machine_fields_are_this_machines"],
    ),
    (
        "the seed-aware test forgets the seeds' spread (a query-level test again)",
        "counterarg/analysis/significance.py",
        "        terms.append((float(x.var(ddof=1)) / x.size, x.size - 1))",
        "        terms.append((0.0, x.size - 1))",
        [
            "tests/analysis/test_significance.py::test_seed_aware_test_is_calibrated_where_the_query_test_is_not",
            "tests/analysis/test_significance.py::test_seed_test_is_welch_without_a_query_term",
        ],
    ),
    (
        "no Holm adjustment over a task's pairs",
        "counterarg/analysis/verdicts.py",
        "    adjusted = holm([r[2].p_value for r in raw])",
        "    adjusted = [r[2].p_value for r in raw]",
        ["tests/analysis/test_verdicts.py::test_compare_orders_pairs_and_holm_adjusts_them"],
    ),
    (
        "a partial sweep crowns winners from unfinished trials",
        "counterarg/analysis/verdicts.py",
        "        if not rec.finished:",
        "        if False:",
        [
            "tests/analysis/test_verdicts.py::test_unfinished_trials_leave_their_strategy_out_and_stop_every_verdict",
            "tests/analysis/test_summary.py::test_a_partial_sweep_says_so_and_crowns_no_one",
        ],
    ),
    (
        "a registry imports config back (an import circle)",
        "counterarg/nn/precision.py",
        "from ..core.fieldvalues import ConfigError\n",
        "from ..config import ConfigError\n",
        ["tests/test_imports.py::test_the_package_has_no_import_circle"],
    ),
    (
        "a data module imports config, a layer above (no circle)",
        "counterarg/data/inputs.py",
        "from ..core.fieldvalues import ConfigError\n",
        "from ..config import ConfigError\n",
        ["tests/test_imports.py::test_every_module_imports_only_its_own_package_or_a_lower_layer"],
    ),
    (
        "resume accepts an architecture change (sim_dim)",
        "counterarg/model/checkpoint.py",
        "    allowed = set(fields_with(RESUME))",
        '    allowed = set(fields_with(RESUME)) | {"sim_dim"}',
        [
            "tests/model/test_checkpoint.py::test_resume_accepts_exactly_the_resume_role_and_names_an_architecture_change"
        ],
    ),
    (
        "the analysis layer imports Ray (compare needs it again)",
        "counterarg/analysis/run_compare.py",
        "import numpy as np\n",
        "import numpy as np\nimport ray  # noqa: F401\n",
        [
            "tests/test_imports.py::test_no_module_of_the_analysis_layer_imports_ray",
            "tests/analysis/test_run_compare.py::test_cli_compare_runs_where_ray_cannot_be_imported",
        ],
    ),
    (
        "a trial's name worked out from its fields, not read from what it carries",
        "counterarg/analysis/methods.py",
        '    return label if isinstance(label, str) and label else variant_label(config, config.get("method"))',
        '    return variant_label(config, config.get("method"))',
        ["tests/analysis/test_methods.py::test_one_label_rule"],
    ),
    (
        "PBT's explore step keeps the donor's name for the new rate",
        "counterarg/sweep/pbt.py",
        '        new["label"] = variant_label(new, new.get("method"))  # explore makes a new variant: named here',
        "        pass",
        ["tests/sweep/test_pbt.py::test_explore_always_moves_the_rate"],
    ),
    (
        "a reranking scorer lets the true counter win its ties",
        "counterarg/retrieval/pool_ranks.py",
        "            ahead = (top.valid & (p_other >= p_true[:, None])).sum(1)  # [n]; ties go ahead",
        "            ahead = (top.valid & (p_other > p_true[:, None])).sum(1)  # [n]; ties go ahead",
        [
            "tests/retrieval/test_pool_ranks.py::test_rerank_reorders_the_top_by_the_scorers_score",
            "tests/evaluation/test_evaluate.py::test_rerank_follows_classifier",
        ],
    ),
    (
        "a whole-split pool counts copies of the query and its counter as other members",
        "counterarg/retrieval/pool_ranks.py",
        "                r_d = 1 + (not_after[:, :cols] & rep[None, :cols]).sum(1) - (peer_before & in_pool).sum(1)  # [B]",
        "                r_d = 1 + (not_after[:, :cols] & rep[None, :cols]).sum(1)  # [B]",
        [
            "tests/evaluation/test_evaluate.py::test_a_copy_of_the_true_counter_is_the_hit_and_a_copy_of_the_query_is_no_candidate"
        ],
    ),
]


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv and argv[0] == "--list":
        for i, (what, path, _, _, tests) in enumerate(M, 1):
            print(f"{i:2d} {path}: {what}  ({', '.join(tests)})")
        return 0
    unknown = [a for a in argv if not (a.isdigit() and 1 <= int(a) <= len(M))]
    if unknown:
        print(f"unknown mutant(s) {', '.join(unknown)}: give numbers 1..{len(M)} (--list shows them)", file=sys.stderr)
        return 2
    only = set(argv)
    missed = []
    with tempfile.TemporaryDirectory(prefix="counterarg-mutants-") as tmp:
        dst = os.path.join(tmp, "tree")
        for i, (what, path, old, new, tests) in enumerate(M, 1):
            if only and str(i) not in only:
                continue
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(
                SRC,
                dst,
                ignore=shutil.ignore_patterns(
                    ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".benchmarks", "results"
                ),
            )
            f = os.path.join(dst, path)
            with open(f) as fh:
                text = fh.read()
            if text.count(old) != 1:
                print(f"{i:2d} {what}: {path} holds the line {text.count(old)} times, not once; update this entry")
                return 2
            with open(f, "w") as fh:
                fh.write(text.replace(old, new))
            t0 = time.time()
            # -m: a mutant's tests run whatever their marks (pyproject's default run leaves out slow ones)
            p = subprocess.run(
                [PY, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "slow or not slow", *tests],
                cwd=dst,
                env={**os.environ, "PYTHONPATH": dst},
                capture_output=True,
                text=True,
            )
            verdict = {1: "CAUGHT", 0: "MISSED"}.get(p.returncode, f"rc={p.returncode}")
            failed = [
                ln.split(" - ")[0].replace("FAILED ", "") for ln in p.stdout.splitlines() if ln.startswith("FAILED")
            ]
            print(
                f"{i:2d} {verdict:6s} {time.time() - t0:4.0f} s  {what}  ({path}; {failed[0] if failed else tests[0]})",
                flush=True,
            )
            if p.returncode != 1:
                missed.append(i)
    if missed:
        print(f"missed: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
