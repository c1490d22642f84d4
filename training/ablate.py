"""The SLIP paper's ablations from a recipe (several seeds, mean ± std, the paper's table layout):

    python training/ablate.py training/recipes/slip_electronics_vitb16.yaml --table components --seeds 0 1 2
    python training/ablate.py training/recipes/slip_electronics_vitb16.yaml --table batch_size \
        --batch_sizes 64 128 256 512 1024

Table 3 (`batch_size`): CLIP baseline vs SLIP at each batch size. Table 4 (`components`): CLIP; + graph;
+ graph + aux; + graph + aux without discriminative LR. Results: <output_dir>/ablation_results.{md,json}.
"""

import sys

from slip_hf.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("ablate", sys.argv[1:], prog="ablate.py"))
