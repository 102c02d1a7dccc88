#!/usr/bin/env python
"""Train or evaluate JSIS-Net on Detectron2's engine (logic: jsis_d2.engine.launcher).

    python tools/train_net.py --config-file configs/Synthetic/jsis_R18_C4_scratch_cpu.yaml
    python tools/train_net.py --config-file CFG --resume            # continue OUTPUT_DIR's run
    python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file CFG --num-gpus 8        # one machine, 8 GPUs
    python tools/train_net.py --config-file CFG --num-gpus 8 --num-machines 2 \
        --machine-rank 0 --dist-url tcp://HOST:PORT         # multi-machine (torch.distributed)
"""

import sys

import jsis_d2  # noqa: F401  (compat shims + registrations)
from jsis_d2.engine.launcher import run

if __name__ == "__main__":
    sys.exit(run())
