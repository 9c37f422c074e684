"""A method in one file: the student with label-smoothed CE (registered as `toy`)."""

import torch.nn.functional as F

from amid.distill.methods.base import METHODS, Method, build_student


@METHODS.register("toy")
class Toy(Method):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.student = build_student(ctx)

    def losses(self, batch, out, epoch):
        return {"smoothed": F.cross_entropy(out["logits_s"], batch.labels, label_smoothing=0.1)}

    def weights(self, epoch):
        return {"smoothed": 1.0}
