"""The paper's Table 3 baseline: two independently trained networks (semantic-only and
instance-only JSISNet, each with its own backbone) whose outputs are merged with the same
heuristics as the joint network."""

import torch
from torch import nn

from detectron2.modeling.postprocessing import detector_postprocess

__all__ = ["SeparateNetworks"]


class SeparateNetworks(nn.Module):
    """Inference-only pair ``(semantic_model, instance_model)`` of :class:`JSISNet`.

    Output per image: the same keys as the joint JSISNet (original resolution): ``sem_seg`` from
    the semantic model, ``instances`` and ``proposals`` from the instance model, and
    ``panoptic_seg`` merged with the instance model's merge settings (MODEL.JSIS.*).
    """

    def __init__(self, semantic_model, instance_model):
        super().__init__()
        if not semantic_model.semantic_on or semantic_model.instance_on:
            raise ValueError("SeparateNetworks: semantic_model must have only the semantic branch")
        if not instance_model.instance_on or instance_model.semantic_on:
            raise ValueError("SeparateNetworks: instance_model must have only the instance branch")
        if semantic_model.num_classes != instance_model.num_classes:
            raise ValueError(
                f"SeparateNetworks: K differs ({semantic_model.num_classes} vs "
                f"{instance_model.num_classes})"
            )
        self.semantic_model = semantic_model
        self.instance_model = instance_model

    @torch.no_grad()
    def forward(self, batched_inputs):
        sem = self.semantic_model(batched_inputs)
        inst_model = self.instance_model
        raw = inst_model.inference(batched_inputs, do_postprocess=False)
        outputs = []
        for inp, s, r in zip(batched_inputs, sem, raw):
            h = int(inp.get("height", r["instances"].image_size[0]))
            w = int(inp.get("width", r["instances"].image_size[1]))
            # The instance-only model has no merge of its own: ask for the mask probabilities.
            instances, probs, keep = inst_model.postprocess_instances(
                r["instances"], h, w, merge_probs=True
            )
            outputs.append(
                {
                    "sem_seg": s["sem_seg"],
                    "instances": instances,
                    "proposals": detector_postprocess(r["proposals"], h, w),
                    "panoptic_seg": inst_model.merge(s["sem_seg"], instances, probs, keep),
                }
            )
        return outputs
