import pytest
import torch
from transformers import TrainerCallback

from slip_hf import SlipConfig, SlipModel
from slip_hf.trainer import SlipTrainer, SlipTrainingArguments


def _args(output_dir, **overrides):
    defaults = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=32,
        max_steps=20,
        learning_rate=2e-3,
        graph_learning_rate=4e-3,
        warmup_steps=2,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        data_seed=0,
    )
    return SlipTrainingArguments(**{**defaults, **overrides})


def _model(slip_config):
    torch.manual_seed(0)
    return SlipModel(slip_config)


def test_training_lowers_the_loss_and_logs_all_parts(tmp_path, slip_config, processed_nodes, node_graph):
    trainer = SlipTrainer(
        model=_model(slip_config), args=_args(tmp_path), graph=node_graph, train_dataset=processed_nodes
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 4
    for entry in logs:
        for key in ("loss_clip", "loss_graph", "loss_aux", "edges_per_node", "positive_pairs"):
            assert key in entry, key
        assert entry["edges_per_node"] > 0.3 and entry["positive_pairs"] > 0
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert logs[-1]["loss_clip"] < logs[0]["loss_clip"]


def test_trainer_optimizer_uses_the_slip_learning_rates(tmp_path, slip_config, processed_nodes, node_graph):
    args = _args(tmp_path, learning_rate=1.6e-4, graph_learning_rate=4e-3, layer_lr_decay=0.8)
    trainer = SlipTrainer(model=_model(slip_config), args=args, graph=node_graph, train_dataset=processed_nodes)
    optimizer = trainer.create_optimizer()
    lrs = {group["group_name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs["graph_head"] == 4e-3
    assert lrs["clip_top-0"] == pytest.approx(1.6e-4)
    assert lrs["clip_top-3"] == pytest.approx(1.6e-4 * 0.8**3)  # embeddings of 2-layer towers
    assert optimizer.defaults["fused"]  # transformers' default with torch >= 2.8: one fused kernel per step


def test_training_arguments_override_the_model_config(tmp_path, slip_config, processed_nodes, node_graph):
    model = _model(slip_config)
    SlipTrainer(model=model, args=_args(tmp_path, hops=2, lambda_graph=0.5), graph=node_graph, train_dataset=processed_nodes)
    assert model.config.hops == 2 and model.config.lambda_graph == 0.5 and model.config.lambda_aux == 0.1


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tmp_path, slip_config, processed_nodes, node_graph):
    common = dict(save_strategy="steps", save_steps=10, max_steps=20)
    full = SlipTrainer(
        model=_model(slip_config), args=_args(tmp_path / "full", **common), graph=node_graph, train_dataset=processed_nodes
    )
    full.train()
    interrupted = SlipTrainer(
        model=_model(slip_config),
        args=_args(tmp_path / "resumed", **common),
        graph=node_graph,
        train_dataset=processed_nodes,
        callbacks=[_StopAt(10)],
    )
    interrupted.train()
    assert (tmp_path / "resumed" / "checkpoint-10").is_dir()
    resumed = SlipTrainer(
        model=_model(slip_config), args=_args(tmp_path / "resumed", **common), graph=node_graph, train_dataset=processed_nodes
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-10"))
    final = lambda trainer: [e for e in trainer.state.log_history if "loss" in e and e["step"] == 20][0]  # noqa: E731
    assert final(resumed)["loss"] == pytest.approx(final(full)["loss"], rel=1e-5)
    assert final(resumed)["loss_graph"] == pytest.approx(final(full)["loss_graph"], rel=1e-5)
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_clip_baseline_runs_without_a_graph(tmp_path, clip_config, processed_nodes):
    model = SlipModel(SlipConfig(clip_config=clip_config, use_graph=False, lambda_aux=0.0))
    args = _args(tmp_path, batch_sampler="uniform", max_steps=3, logging_steps=1)
    trainer = SlipTrainer(model=model, args=args, train_dataset=processed_nodes)
    trainer.train()
    entry = trainer.state.log_history[0]
    assert entry["loss"] == pytest.approx(entry["loss_clip"], rel=1e-5) and "loss_graph" not in entry


def test_evaluation_reports_a_loss(tmp_path, slip_config, processed_nodes, node_graph):
    trainer = SlipTrainer(model=_model(slip_config), args=_args(tmp_path, per_device_eval_batch_size=40), graph=node_graph, eval_dataset=processed_nodes)
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0


def test_misconfigurations_fail_early(tmp_path, slip_config, processed_nodes):
    with pytest.raises(ValueError, match="needs `graph`"):
        SlipTrainer(model=_model(slip_config), args=_args(tmp_path), train_dataset=processed_nodes)
    with pytest.raises(ValueError, match="load_best_model_at_end"):
        _args(tmp_path, early_stopping_patience=10)
    with pytest.raises(ValueError, match="batch_sampler"):
        _args(tmp_path, batch_sampler="random")


def test_early_stopping_callback_is_added(tmp_path, slip_config, node_graph, processed_nodes):
    args = _args(
        tmp_path, early_stopping_patience=10, load_best_model_at_end=True, eval_strategy="steps",
        save_strategy="steps", eval_steps=5, save_steps=5, metric_for_best_model="loss",
    )
    trainer = SlipTrainer(model=_model(slip_config), args=args, graph=node_graph, eval_dataset=processed_nodes)
    callback = [c for c in trainer.callback_handler.callbacks if type(c).__name__ == "EarlyStoppingCallback"][0]
    assert callback.early_stopping_patience == 10 and callback.early_stopping_threshold == 0.001


def test_training_with_every_objective_logs_each_part_and_follows_the_schedule(tmp_path, slip_config, processed_nodes, node_graph, tokenizer):
    from slip_hf.toy import toy_image_processor

    args = _args(
        tmp_path, max_steps=10, num_train_epochs=2, lambda_structxlip_global=0.5, lambda_structxlip_local=0.1,
        lambda_structxlip_consistency=0.05, objective_schedule=["structxlip_global"], schedule_decay_start=0, schedule_decay_end=2, schedule_floor=0.2,
    )
    model = _model(slip_config)
    trainer = SlipTrainer(model=model, args=args, graph=node_graph, train_dataset=processed_nodes, processing_class=tokenizer,
                          image_processor=toy_image_processor(16))
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    for name in ("clip", "graph", "aux", "structxlip_global", "structxlip_local", "structxlip_consistency"):
        assert all(f"loss_{name}" in entry for entry in logs), name
    assert model.config.lambda_structxlip_global == 0.5  # the schedule scales the weight, it does not rewrite it
    # epoch 1 (the last): halfway through the cosine decay from epoch 0 to 2, floor 0.2
    assert model.objective_weight_factors == {"structxlip_global": pytest.approx(0.2 + 0.8 * 0.5)}


def test_structxlip_without_an_image_processor_fails_clearly(tmp_path, slip_config, processed_nodes, node_graph, tokenizer):
    with pytest.raises(ValueError, match="image processor"):
        SlipTrainer(model=_model(slip_config), args=_args(tmp_path, lambda_structxlip_global=0.5), graph=node_graph,
                    train_dataset=processed_nodes, processing_class=tokenizer)


def test_unknown_scheduled_objective_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown objectives"):
        _args(tmp_path, objective_schedule=["structxlp_global"])


def test_loaders_take_every_worker_setting_and_seed_each_worker_by_rank(tmp_path, slip_config, processed_nodes, node_graph):
    import functools
    import signal

    from transformers.trainer_utils import seed_worker

    from slip_hf.faults import WorkerIgnoringNotice

    args = _args(tmp_path, dataloader_num_workers=2, dataloader_persistent_workers=True, dataloader_prefetch_factor=3,
                 dataloader_multiprocessing_context="fork", per_device_eval_batch_size=64)
    trainer = SlipTrainer(model=_model(slip_config), args=args, graph=node_graph, train_dataset=processed_nodes,
                          eval_dataset=processed_nodes)
    loader = trainer.get_train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (2, True, 3)
    init = loader.worker_init_fn  # seeds each worker, which ignores a preemption notice (the main process saves)
    assert isinstance(init, WorkerIgnoringNotice) and int(signal.SIGTERM) in init.numbers
    context = loader.multiprocessing_context  # the start method asked for, its workers started with the signals blocked
    assert context.get_start_method() == "fork" and int(signal.SIGTERM) in context.Process(target=print).blocked_signals
    assert isinstance(init.init, functools.partial) and init.init.func is seed_worker
    assert init.init.keywords == {"num_workers": 2, "rank": 0}
    assert trainer.get_eval_dataloader() is trainer.get_eval_dataloader()  # persistent workers: one eval loader
    # the workers change where batches are made, not what they hold
    serial = SlipTrainer(model=_model(slip_config), args=_args(tmp_path), graph=node_graph, train_dataset=processed_nodes)
    batches, serial_batches = list(loader), list(serial.get_train_dataloader())
    assert len(batches) == len(serial_batches) == 5
    for batch, reference in zip(batches, serial_batches):
        assert torch.equal(batch["node_ids"], reference["node_ids"]) and torch.equal(batch["edge_index"], reference["edge_index"])
        assert torch.equal(batch["pixel_values"], reference["pixel_values"])


def test_a_worker_run_trains_like_a_serial_run(tmp_path, slip_config, processed_nodes, node_graph):
    runs = []
    for workers in (0, 2):
        trainer = SlipTrainer(model=_model(slip_config), args=_args(tmp_path / str(workers), dataloader_num_workers=workers,
                                                                    max_steps=6, logging_steps=3),
                              graph=node_graph, train_dataset=processed_nodes)
        trainer.train()
        runs.append([entry["loss"] for entry in trainer.state.log_history if "loss" in entry])
    assert runs[0] == runs[1] and len(runs[0]) == 2


@pytest.mark.parametrize("save_strategy, stops", [("steps", True), ("no", False)])
def test_a_notice_after_the_last_step_stops_the_run_where_its_checkpoint_holds_that_step(
        tmp_path, slip_config, processed_nodes, node_graph, save_strategy, stops):
    """A real SIGUSR1 while the last step's checkpoint is written: the notice is not lost. With that checkpoint in
    place the run stops before its final model and test evaluation (an ablation table before its next run); with
    no checkpoint of that step (`save_strategy` "no") finishing the run is what keeps its work."""
    import os
    import signal

    class SignalAtTheLastSave(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == state.max_steps:  # after the notice's own check of this step
                os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.getsignal(signal.SIGUSR1)
    try:
        trainer = SlipTrainer(model=_model(slip_config), graph=node_graph, train_dataset=processed_nodes,
                              args=_args(tmp_path, max_steps=4, save_strategy=save_strategy, save_steps=2,
                                         save_on_signal="SIGUSR1"))
        trainer.add_callback(SignalAtTheLastSave())  # runs after the notice's own callback
        trainer.train()
        preempted = trainer.preemption.preempted(tmp_path)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert trainer.state.global_step == 4
    if stops:
        assert preempted is not None and preempted.exit_code == 128 + signal.SIGUSR1
        assert preempted.checkpoint == str(tmp_path / "checkpoint-4")
    else:
        assert preempted is None
