"""Train and evaluate SLIP (or the CLIP fine-tuning baseline) on the Amazon co-purchase multimodal graph.

    python training/run_slip.py training/recipes/slip_electronics_vitb16.yaml
    accelerate launch training/run_slip.py training/recipes/slip_electronics_vitb16.yaml --bf16 True
    python training/run_slip.py --dataset_name data/ --model_name_or_path openai/clip-vit-base-patch16 \
        --output_dir runs/slip --num_train_epochs 50 --eval_strategy epoch --save_strategy epoch \
        --load_best_model_at_end True --metric_for_best_model mrr --early_stopping_patience 10
    python training/run_slip.py <recipe or flags> --baseline clip --output_dir runs/clip   # Table 2's baseline

A leading YAML/JSON file gives the arguments; flags after it override. `--help` lists all of them: the model
(ModelArguments), the data (DataArguments) and training (SlipTrainingArguments = transformers'
TrainingArguments + SLIP's discriminative LR, graph LR, hops, loss weights, sampler, early stopping).
"""

import sys

from slip_hf.cli import run_command


def main(argv: list[str] | None = None) -> int:
    """Errors caused by the input (a bad recipe key, a missing folder, bf16 without a GPU, a corrupt image in a
    data worker) print one line and return 2, as `slip-hf train` does; `--debug` shows the traceback."""
    return run_command("train", sys.argv[1:] if argv is None else argv, prog="run_slip.py")


if __name__ == "__main__":
    sys.exit(main())
